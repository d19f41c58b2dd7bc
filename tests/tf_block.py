"""Source of a prelude that makes `import tensorflow` (and TFDS) fail, for subprocess import checks."""

BLOCK_TENSORFLOW = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):\n"
    "            raise ImportError('blocked ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)
