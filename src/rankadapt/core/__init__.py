"""The lowest layer: errors, the configuration schema, the adapter layer, module-name maps, model
name resolution, collectives, file safety, progress bars. Imports nothing else of rankadapt."""
