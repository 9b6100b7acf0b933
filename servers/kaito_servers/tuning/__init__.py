"""The tuning runner: LoRA/QLoRA fine-tuning from upstream KAITO's training_config.yaml.

Modules: :mod:`.config` (the configuration, no ML imports), :mod:`.data` (reading and checking
the data), :mod:`.training` (peft + transformers' Trainer, checkpoints and resume),
:mod:`.metrics` (progress and Prometheus), :mod:`.export` (the GGUF LoRA), :mod:`.cli`
(``python -m kaito_servers tune``). The Job contract is in servers/README.md.
"""
