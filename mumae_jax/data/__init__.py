"""Data: one interface over the datasets (`sources.get_source(config.data)`), the embedded synthetic MMAct-like
dataset, prepared MMAct, episodes, class splits, sensor and video preprocessing and the tf.data pipelines.

- `mumae_jax.data.synthetic`: a deterministic, procedurally generated multimodal action dataset with
  MMAct's structure (33 classes split 23/10, 4 cameras sharing one sensor recording, 4 wearable
  sensors at 100/50 Hz). numpy only.
- `mumae_jax.data.sensor_ops`: the official per-file min-max + `floor(linspace)` resampling. numpy only.
- `mumae_jax.data.input_pipeline`, `episode_input`, `mmact_input`, `mmact_tfds`: the tf.data inputs. They
  import TensorFlow; import them explicitly (or go through `sources`, which imports them on first use).
"""
