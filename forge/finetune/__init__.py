"""Fine-tuning jobs (OpenAI's ``/v1/fine_tuning/jobs``): the request and its "auto"
values, the job store, the job manager's queue and lifecycle. The training itself is
``train/``; the actor that runs the manager is ``actors/fine_tuning.py``."""
