"""What every stage uses: the training loop's skeleton (loop.py), checkpoints, metrics, the run lock, the device
mesh, multi-process start, the pretraining optimizer, host memory and config files for commands.
"""
