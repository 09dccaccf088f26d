"""The core: registries, specs, run store, trainer, FLOPs and I/O that the engine composes."""
