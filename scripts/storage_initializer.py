"""KServe's storage initializer: fetch a model URI into a folder with KServe's own storage code.

    storage_initializer.py SRC_URI DEST_DIR

The entry point of the `storage-initializer` image, the same call KServe's storage-initializer
image makes (kserve-storage, the version the project pins): s3://, gs://, pvc://, http(s)://
archives. For the container test, and for clusters that cannot pull kserve/storage-initializer.
"""

import logging
import sys

from kserve_storage import Storage

if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} SRC_URI DEST_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    Storage.download(sys.argv[1], sys.argv[2])
