"""The two training stages, one flat `train_and_evaluate` each: MAE pretraining (pretraining.py) and the
one-shot stage (oneshot_training.py). Both run through `core.loop.TrainLoop`.
"""
