"""The KAITO Workspace operator (kopf).

Layers: :mod:`settings` (configuration); the pure core: :mod:`plan` (Workspace + what was
observed -> Desired), :mod:`manifests` (the objects), :mod:`status` (facts -> status);
:mod:`checks` (the one door to validation); :mod:`cache` (watch caches) and :mod:`kube` (API
calls) with :mod:`nodeclient` (what provisioners may do); :mod:`reconciler` (read -> plan ->
apply -> write status); :mod:`boundary` (typed errors -> result, status, delay, event);
:mod:`pokes` (daemon wake-ups), :mod:`context` (the operator's context and one reconcile round),
:mod:`wiring` (the kopf handlers and indexes), :mod:`runtime` (start-up), :mod:`cli`
(``kaito operator``). Importing this package imports neither kopf nor a client.
"""
