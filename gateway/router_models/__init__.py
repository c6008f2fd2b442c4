"""Router models for ``routing_mode = intent_classifier`` (pure Python, no Django).

- ``local``: the built-in local router model ``intent-classifier``.
- ``llm``: prompt building and answer parsing for a router model that is an LLM.
- ``evaluation``: accuracy, confusion, latency and cost figures for labelled prompts.
"""

from __future__ import annotations

from gateway.router_models.local import Classification, LocalIntentClassifier, RouteIntent

__all__ = ["Classification", "LocalIntentClassifier", "RouteIntent"]
