"""Process-level plumbing shared by training and evaluation runs: DDP rank launching, FSDP sharding, experiment
loggers."""
