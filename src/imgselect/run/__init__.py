"""Running jobs: the command line (cli), resume and failure records (jobs, jobfolder), the pipeline that builds a
job from its config and runs its stages, the trainers and DDP (runtime, callbacks), the settings checks,
experiment tracking and progress lines."""
