"""Fine-tuning: the finetune step and the hyper-parameter search around it.

- :mod:`~refinery.training.finetune`: the step, as a sequence: read, validation fit, refit, save;
- :mod:`~refinery.training.splits`: the prepared splits and class weights it reads;
- :mod:`~refinery.training.base_model`: where the base model comes from (a folder, or a cached download);
- :mod:`~refinery.training.device`: the device, its settings, CPU threads, the data-parallel rank;
- :mod:`~refinery.training.classifier`: the classifier built from the base model, ready to train;
- :mod:`~refinery.training.trainer`: one training with the Hugging Face Trainer (arguments, metric,
  callbacks), resumable;
- :mod:`~refinery.training.techniques`: the techniques ``training`` configures (freezing, LoRA, ...);
- :mod:`~refinery.training.checkpointing`: checkpoints, the best weights kept apart, SIGTERM;
- :mod:`~refinery.training.progress`: progress lines for a log that is not a terminal;
- :mod:`~refinery.training.tracking`: the MLflow run of a training;
- :mod:`~refinery.training.records`: ``training.json``, what a fine-tuning did;
- :mod:`~refinery.training.distributed`: data-parallel fine-tuning under torchrun;
- :mod:`~refinery.training.hpo`: the hyper-parameter search's trials and winner.
"""
