"""Training objectives: the MAE reconstruction targets and loss (mae_loss.py). No TensorFlow.
"""
