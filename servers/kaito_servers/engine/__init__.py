"""Inference engines behind one interface (:class:`kaito_servers.engine.base.Engine`).

The engine modules import their ML library (llama_cpp, torch) at import time, so only
:mod:`kaito_servers.backends` decides, lazily, which one to import.
"""
