"""The NumPy engine: layers, activations, losses, optimizers, schedules, the model, the array
backend and the fused kernels, each in a name-keyed registry. Imports nothing of dltrain
outside this package."""
