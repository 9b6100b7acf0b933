"""KAITO inference server: ``/chat`` and the OpenAI API over llama.cpp and transformers engines.

Importing this package is cheap: the FastAPI app, the engines and every ML library are imported
only by the modules that need them (:mod:`kaito_servers.app`, :mod:`kaito_servers.engine`).
The operator imports :mod:`kaito_servers.backends` for the container command of each backend.
"""

__version__ = "0.1.0"
