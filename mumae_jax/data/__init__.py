"""Data: the embedded synthetic MMAct-like dataset, sensor preprocessing and the tf.data input pipeline.

- `mumae_jax.data.synthetic`: a deterministic, procedurally generated multimodal action dataset with
  MMAct's structure (33 classes split 23/10, 4 cameras sharing one sensor recording, 4 wearable
  sensors at 100/50 Hz). numpy only.
- `mumae_jax.data.sensor_ops`: the official per-file min-max + `floor(linspace)` resampling. numpy only.
- `mumae_jax.data.input_pipeline`: the pretraining input (tf.data). The only module here that imports
  TensorFlow; import it explicitly.
"""
