"""``tokenlean demo``: the main job, end to end, on this machine, with no network.

It starts two local OpenAI-compatible model servers (llama.cpp; a "strong" and a "weak"
endpoint), runs the bundled workload (``tokenlean.demo_data``: a tool-using agent, a RAG
session, repeated support questions) twice, and measures both runs with ``tokenlean.metering``:

* **baseline** — every request as the application built it, to the strong endpoint;
* **all levers** — cache-aware layout (``tokenlean.layout``), verbatim compaction
  (``tokenlean.compaction``), the semantic cache (``tokenlean.cache``) and routing with a
  cascade (``tokenlean.routing``), each used the way its docs recommend for that traffic.

Then it profiles the baseline trace (``tokenlean.profile``) and writes one HTML report with the
profiler's ranked levers *and* the measured before/after table: tokens and cost per task, TTFT,
tokens/s, cache hit rate, routing mix, answers graded correct before / after against the
references bundled with the workload (``tokenlean.demo.grade``), and the profiler's estimate per
lever beside the saving the levers run attributes to it (``tokenlean.demo.attribution``).

Both local endpoints serve the same small model (SmolLM2-135M); for cost they are priced as
``--strong-price-as`` / ``--weak-price-as`` (default gpt-4o / gpt-4o-mini) so the money column
shows what the same traffic would cost on hosted models. Timings are measured; token counts are
the server's where it reports usage and tiktoken counts otherwise (llama.cpp's streaming API
reports none), the same counter in both runs.

The package, step by step: ``run`` (``run_demo`` and its named steps), ``traffic`` (how each
call is sent, with or without the levers), ``measure`` (per-task numbers and the comparison),
``report`` (console tables, the HTML section, the notes) and ``cli`` (``tokenlean demo``).
"""

from __future__ import annotations

from tokenlean.demo.cli import register_cli
from tokenlean.demo.run import DemoResult, run_demo

__all__ = ["DemoResult", "register_cli", "run_demo"]
