"""How a run executes, whatever the task and the method: accelerator, loaders, samplers, optimizer,
checkpoints, resume checks, metric logs."""
