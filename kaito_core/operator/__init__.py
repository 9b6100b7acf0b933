"""The KAITO Workspace operator (kopf).

Layers: :mod:`settings` (configuration), :mod:`manifests` and :mod:`status` (pure: spec -> objects,
facts -> status), :mod:`kube` (API calls), :mod:`reconciler` (level-based flow), :mod:`boundary`
(KaitoError -> kopf errors), :mod:`handlers` (thin kopf handlers), :mod:`runtime` (start-up),
:mod:`cli` (``kaito operator``). Importing this package imports neither kopf nor a client.
"""
