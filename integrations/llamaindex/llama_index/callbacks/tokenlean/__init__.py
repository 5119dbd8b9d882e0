"""tokenlean metering for LlamaIndex: one event handler on the root dispatcher."""

from llama_index.callbacks.tokenlean.handler import TokenleanEventHandler, instrument, uninstrument

__all__ = ["TokenleanEventHandler", "instrument", "uninstrument"]
