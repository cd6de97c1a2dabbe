"""An OpenAI-compatible HTTP server over the engine: `create_app(model)`, served with uvicorn.

Needs the `server` extra (fastapi, uvicorn, sse-starlette, prometheus-client, llguidance).
"""

from edgelm.server.app import create_app
from edgelm.server.runner import BackgroundServer, serve

__all__ = ["BackgroundServer", "create_app", "serve"]
