"""Routing: the cheapest adequate model (policies, cascades) on the least loaded healthy server.

Two routers in one: *quality* policies decide which model answers (rules, semantic routes, a
learned router, a cascade), and a ``ReplicaGroup`` decides which server of that model takes the
call (least outstanding requests, prefix affinity, health ejection, failover). ``Router`` ties
them together and meters every call. ``tokenlean.routing.eval`` scores policies offline the way
RouteLLM does (cost-quality curve, CPT, APGR); ``tokenlean.routing.outcomes`` reads outcome files
and writes the opt-in outcome log; ``tokenlean.routing.persist`` saves and loads learned routers.

Only httpx and numpy are imported here; embeddings load on first use of a semantic or learned
policy.
"""

from __future__ import annotations

from tokenlean.routing.adequate import CheapestAdequateRouter
from tokenlean.routing.cascade import (
    Cascade,
    Consistency,
    LearnedVerifier,
    MeanLogprob,
    SelfCheck,
    Signal,
    Validate,
    Verdict,
    arithmetic_validator,
    json_schema_validator,
    regex_validator,
)
from tokenlean.routing.decision import Decision, OutputControl, RoutingPolicy
from tokenlean.routing.endpoints import Endpoint, EndpointMetrics, OpenAICompatibleEndpoint
from tokenlean.routing.learned import LearnedRouter
from tokenlean.routing.lexical import LexicalGapScorer
from tokenlean.routing.outcomes import OutcomeLog, OutcomeTable, read_outcomes
from tokenlean.routing.replicas import ReplicaGroup, stable_prefix_key
from tokenlean.routing.router import ROUTING_KEY, Router
from tokenlean.routing.rules import Rule, RulesPolicy
from tokenlean.routing.scorers import (
    EnsembleScorer,
    KNNGapScorer,
    KNNScorer,
    LogisticScorer,
    MatrixFactorizationScorer,
    QualityGapScorer,
    calibrate_threshold,
    share_for_budget,
)
from tokenlean.routing.semantic_routes import SemanticRoute, SemanticRouter
from tokenlean.routing.vllm import VLLMEndpoint, parse_prometheus
from tokenlean.routing.wire import StreamChunk

__all__ = [
    "ROUTING_KEY",
    "Cascade",
    "CheapestAdequateRouter",
    "Consistency",
    "Decision",
    "Endpoint",
    "EndpointMetrics",
    "EnsembleScorer",
    "KNNGapScorer",
    "KNNScorer",
    "LearnedRouter",
    "LearnedVerifier",
    "LexicalGapScorer",
    "LogisticScorer",
    "MatrixFactorizationScorer",
    "MeanLogprob",
    "OpenAICompatibleEndpoint",
    "OutcomeLog",
    "OutcomeTable",
    "OutputControl",
    "QualityGapScorer",
    "ReplicaGroup",
    "Router",
    "RoutingPolicy",
    "Rule",
    "RulesPolicy",
    "SelfCheck",
    "SemanticRoute",
    "SemanticRouter",
    "Signal",
    "StreamChunk",
    "VLLMEndpoint",
    "Validate",
    "Verdict",
    "arithmetic_validator",
    "calibrate_threshold",
    "json_schema_validator",
    "parse_prometheus",
    "read_outcomes",
    "regex_validator",
    "share_for_budget",
    "stable_prefix_key",
]
