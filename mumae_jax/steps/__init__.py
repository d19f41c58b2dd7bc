"""The jitted training steps and the train state they share (train_state.py: creation, guarded update).
No TensorFlow.
"""
