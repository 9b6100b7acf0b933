"""KAITO in Python: the Workspace API, its validation, the plugin registry and the operator.

Nothing heavy is imported here: importing :mod:`kaito_core` loads no plugin, no Kubernetes
client and no ML library.
"""

__version__ = "0.1.0"
