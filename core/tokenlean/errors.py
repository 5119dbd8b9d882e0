"""The one exception tree of tokenlean.

Every error tokenlean raises on purpose is a ``TokenleanError``; catching that one class is
enough to guard a user's chain. Subclasses also inherit the builtin a caller would naturally
catch (``ValueError`` for bad input, ``ImportError`` for a missing extra, ``TimeoutError`` for a
timed-out endpoint) so code written against the standard library keeps working.

```
TokenleanError
├── ConfigError                      bad option or configuration value          (ValueError)
├── InputError                       bad user input                             (ValueError)
│   ├── MessageFormatError           a message / request / response of the wrong shape
│   ├── UsageFormatError             a usage block that cannot be read
│   ├── TextEncodingError            bytes that are not UTF-8 text
│   ├── EmptyInputError              nothing to work on where something is needed
│   └── OutcomeFormatError           a routing outcome file or outcome log tokenlean cannot read
├── MissingDependencyError           an optional extra is not installed         (ImportError)
├── PricingError                     price-table problems
│   └── UnknownModelError            the model has no price                     (KeyError)
├── TokenizerError                   no tokenizer could be loaded
├── MeteringError                    ledger / exporter failures
├── CompactionError
│   ├── VerbatimViolation            output is not a verbatim subsequence of the input
│   └── UnknownHandleError           expand_omitted() got a handle it never issued (KeyError)
├── CacheError
│   ├── CacheBackendError            store or index unavailable; callers degrade to pass-through
│   └── CalibrationError             not enough labelled data to reach the target rate
├── LayoutError
├── RoutingError
│   ├── NoRouteError                 every target and fallback failed or none matched
│   ├── RouterFileError              a saved router that cannot be read         (ValueError)
│   │   └── EmbedderMismatchError    it was trained on other embeddings than this embedder's
│   └── EndpointError                talking to one endpoint failed
│       ├── EndpointTimeout                                                    (TimeoutError)
│       ├── EndpointUnavailable      connection refused, 5xx, unhealthy
│       │   └── StreamInterrupted    a stream broke after it had sent tokens
│       └── EndpointProtocolError    4xx, broken JSON, unexpected shape
├── ServerError                      the local model server failed to start / stop
├── GatewayError                     a request the gateway refuses (carries an HTTP status)
│   ├── AuthError                    no or an unknown virtual key, or a route it may not use (401/403)
│   └── BudgetExceeded               the key's daily requests / tokens / money are spent (429)
└── ProfileError
    └── TraceFormatError             a trace file tokenlean cannot read         (ValueError)
```
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BudgetExceeded",
    "CacheBackendError",
    "CacheError",
    "CalibrationError",
    "CompactionError",
    "ConfigError",
    "EmbedderMismatchError",
    "EmptyInputError",
    "EndpointError",
    "EndpointProtocolError",
    "EndpointTimeout",
    "EndpointUnavailable",
    "GatewayError",
    "InputError",
    "LayoutError",
    "MessageFormatError",
    "MeteringError",
    "MissingDependencyError",
    "NoRouteError",
    "OutcomeFormatError",
    "PricingError",
    "ProfileError",
    "RouterFileError",
    "RoutingError",
    "ServerError",
    "StreamInterrupted",
    "TextEncodingError",
    "TokenizerError",
    "TokenleanError",
    "TraceFormatError",
    "UnknownHandleError",
    "UnknownModelError",
    "UsageFormatError",
    "VerbatimViolation",
]


class TokenleanError(Exception):
    """Base of every error tokenlean raises deliberately."""


class ConfigError(TokenleanError, ValueError):
    """An option or configuration value is out of range or inconsistent."""


class InputError(TokenleanError, ValueError):
    """The caller handed over input tokenlean cannot work on."""


class MessageFormatError(InputError):
    """A message, request or response does not have the expected shape."""


class UsageFormatError(InputError):
    """A usage block is malformed (negative or non-integer counts, wrong types)."""


class TextEncodingError(InputError):
    """Bytes that are not valid UTF-8 were given where text is required."""


class EmptyInputError(InputError):
    """Empty input where at least one unit of content is needed."""


class OutcomeFormatError(InputError):
    """A routing outcome file (CSV / JSONL) or outcome log has a bad column, value or record."""


class MissingDependencyError(TokenleanError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""

    def __init__(self, package: str, extra: str, distribution: str = "tokenlean") -> None:
        self.package = package
        self.extra = extra
        super().__init__(f'{package!r} is required for this feature: pip install "{distribution}[{extra}]"')


class PricingError(TokenleanError):
    """Price-table problems: unreadable file, negative price."""


class UnknownModelError(PricingError, KeyError):
    """The price table has no entry for the model (and no alias or prefix match)."""

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return str(self.args[0]) if self.args else "unknown model"


class TokenizerError(TokenleanError):
    """No tokenizer could be loaded and estimation was not allowed."""


class MeteringError(TokenleanError):
    """The ledger or an exporter failed."""


class CompactionError(TokenleanError):
    """Compaction could not be carried out."""


class VerbatimViolation(CompactionError):
    """A compacted output is not a verbatim, order-preserving subsequence of its input."""


class UnknownHandleError(CompactionError, KeyError):
    """``expand_omitted`` was asked for a handle that was never issued (or has expired)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown handle"


class CacheError(TokenleanError):
    """Cache-level failure."""


class CacheBackendError(CacheError):
    """The store or vector index is unavailable; callers treat it as a miss and pass through."""


class CalibrationError(CacheError):
    """Calibration data cannot reach the requested false-hit rate."""


class LayoutError(TokenleanError):
    """Prompt-layout analysis or reordering failed."""


class RoutingError(TokenleanError):
    """Routing failed."""


class NoRouteError(RoutingError):
    """No target could serve the request: none matched, or all of them and their fallbacks failed."""


class RouterFileError(RoutingError, ValueError):
    """A saved router is missing, corrupt, or of a format version this tokenlean cannot read."""


class EmbedderMismatchError(RouterFileError):
    """A saved router was trained on another embedder's vectors (name, dimension or table differ)."""


class EndpointError(RoutingError):
    """Talking to one endpoint failed. ``retryable`` says whether another try may succeed."""

    retryable: bool = False

    def __init__(self, message: str, *, endpoint: str | None = None, status: int | None = None):
        self.endpoint = endpoint
        self.status = status
        super().__init__(message)


class EndpointTimeout(EndpointError, TimeoutError):
    """The endpoint did not answer (or did not produce a first token) in time."""

    retryable = True


class EndpointUnavailable(EndpointError):
    """Connection refused, 5xx, or the endpoint is marked unhealthy."""

    retryable = True


class StreamInterrupted(EndpointUnavailable):
    """A stream broke after it had already sent tokens: what arrived is not the whole answer.

    It is never retried (a replay would repeat text the caller has shown) and never passed off as
    a finished answer: the caller must discard or mark the partial text.
    """


class EndpointProtocolError(EndpointError):
    """A 4xx answer, broken JSON, or a body of unexpected shape; retrying will not help."""


class ServerError(TokenleanError):
    """The local model server could not be started or stopped."""


class GatewayError(TokenleanError):
    """``tokenlean serve`` refuses a request; ``status`` is the HTTP status the client gets."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class AuthError(GatewayError):
    """No virtual key, an unknown one (401), or a route the key may not use (403)."""

    status = 401
    code = "invalid_api_key"


class BudgetExceeded(GatewayError):
    """The virtual key's daily budget (requests, tokens or money) is spent."""

    status = 429
    code = "budget_exceeded"


class ProfileError(TokenleanError):
    """The profiler could not produce estimates."""


class TraceFormatError(ProfileError, ValueError):
    """A trace file is in none of the formats tokenlean reads."""
