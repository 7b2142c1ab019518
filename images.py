"""Image files and folder trees: the one image reader, and the scan of an ImageFolder tree.

`read_image` is used by training (data.load_folder) and by predict.py, so the two cannot
drift apart. `scan_split` lists a split's class folders in ImageFolder's order, refusing
symbolic links that loop or leave their class folder (they would relabel images).
"""
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torchvision
from PIL import Image

from utils import UserError


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


# ---------------------------------------------------------------- reading image files

# Pillow modes of one channel. "I" and "I;16*" are 16-bit grey (PNG, TIFF, PGM with maxval > 255).
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _to_8_bits(img):
    """16-bit grey as 8 bits by its high byte (value >> 8).

    Pillow's own convert("L") clips 16-bit values at 255, which turns almost every pixel of a
    16-bit PNG white. Keeping the high byte is also what Pillow does itself when it opens a
    16-bit-per-channel (48-bit) RGB or RGBA PNG, so every 16-bit file maps to 8 bits the same
    way: 0 -> 0, 65535 -> 255, 256*k .. 256*k+255 -> k. Mode "I" (32-bit int, which Pillow
    uses for 16-bit PGM) is clipped to 0..65535 first. 8-bit modes are returned untouched.
    """
    if img.mode == "I" or img.mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8))
    return img


def read_image(path, mode, size):
    """uint8 array (size, size, C) of one image file, converted to the Pillow `mode` ("L" or
    "RGB") and resized bilinearly; a one-line UserError naming the file if it cannot be read."""
    try:
        with Image.open(path) as img:
            img = _to_8_bits(img).convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            # np.array, not np.asarray: a writable copy, so torch.from_numpy takes it without a warning.
            arr = np.array(img, dtype=np.uint8)
    except Exception as e:  # PIL raises many types for broken or foreign files
        raise UserError(f"cannot read image {path}: {type(e).__name__}")
    return arr[:, :, None] if arr.ndim == 2 else arr


def _pool():
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))


def read_images(paths, mode, size):
    with _pool() as pool:
        images = list(pool.map(lambda p: read_image(p, mode, size), paths, chunksize=256))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def _image_mode(path):
    try:
        with Image.open(path) as img:  # reads the header only
            return img.mode
    except Exception as e:
        raise UserError(f"cannot read image {path}: {type(e).__name__}")


def channels_of(paths, chunk=1024):
    """"L" when every file is grey, else "RGB": all files decide (a subset gets the channels of
    the whole set), from their headers only, and the first colour file settles it (reading
    50,000 JPEG headers takes longer than decoding 10,000 images)."""
    with _pool() as pool:
        for start in range(0, len(paths), chunk):
            if not set(pool.map(_image_mode, paths[start:start + chunk], chunksize=64)) <= GRAY_MODES:
                return "RGB"
    return "L"


# ---------------------------------------------------------------- image folders

IMG_EXTENSIONS = torchvision.datasets.folder.IMG_EXTENSIONS


def _inside(path, folder):
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _class_files(class_dir, class_name):
    """The image files under one class folder, in ImageFolder's order.

    ImageFolder follows every symbolic link, so a link back up the tree (train/one/loop -> ..)
    made it walk the whole split again, some 40 times, labelling every image of every class
    with this folder's class. Links to files are kept (a class folder of links to images
    elsewhere is common); a link to a folder is refused when it loops or leaves the class
    folder, and skipped (its images are already here) when it points inside it.
    """
    real_class = os.path.realpath(class_dir)
    walked = []
    for folder, dirs, files in os.walk(class_dir):  # followlinks=False: links are looked at below
        for name in list(dirs):
            link = os.path.join(folder, name)
            if not os.path.islink(link):
                continue
            dirs.remove(name)
            target = os.path.realpath(link)
            if _inside(os.path.realpath(folder), target):
                reason = "a folder it is itself in (a loop)"
            elif not _inside(target, real_class):
                reason = f"outside its class folder {class_dir}"
            else:
                warn(f"skipping {link}: a symbolic link to {target}, whose images are already in class '{class_name}'")
                continue
            raise UserError(f"{link} is a symbolic link to {target}, {reason}; following it would label those "
                            f"images '{class_name}' (remove the link, or copy the images into the class folder)")
        walked.append((folder, files))
    # The order of torchvision's make_dataset: folders sorted by path, files by name.
    return [os.path.join(folder, f) for folder, files in sorted(walked) for f in sorted(files)
            if f.lower().endswith(IMG_EXTENSIONS)]


def scan_split(split_dir):
    """(class names, [(path, class index)]) of one ImageFolder split: torchvision's classes and
    order, with symbolic links checked (see _class_files)."""
    try:
        classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    except OSError as e:
        raise UserError(f"{split_dir}: {e.strerror}")
    if not classes:
        raise UserError(f"{split_dir} has no class folders (expected {split_dir}/<class>/*.jpg|png)")
    # A class folder that is a link to the split (or above it), or to another class folder (or
    # into it), would give the same images two labels.
    real_split = os.path.realpath(split_dir)
    real = sorted((os.path.join(os.path.realpath(os.path.join(split_dir, c)), ""), c) for c in classes)
    for r, c in real:
        if _inside(real_split, r.rstrip(os.sep) or os.sep):
            raise UserError(f"{os.path.join(split_dir, c)} is a symbolic link to {r.rstrip(os.sep)}, which holds "
                            f"the whole split (a loop)")
    # Sorted with a trailing separator, a folder is directly followed by those inside it.
    for (r1, c1), (r2, c2) in zip(real, real[1:]):
        if r2.startswith(r1):
            raise UserError(f"class folders {os.path.join(split_dir, c1)} and {os.path.join(split_dir, c2)} are the "
                            f"same folder or one holds the other (a symbolic link?); their images would get two labels")
    samples = [(p, i) for i, c in enumerate(classes) for p in _class_files(os.path.join(split_dir, c), c)]
    empty = sorted(set(classes) - {classes[i] for _, i in samples})
    if empty:
        raise UserError(f"{split_dir}: no image files for the classes {', '.join(empty)} "
                        f"(looked for {', '.join(IMG_EXTENSIONS)})")
    return classes, samples


def split_dirs(root):
    """(train folder, test folder, its name): test/ when it is there, else val/."""
    train_dir = os.path.join(root, "train")
    found = [d for d in ("test", "val") if os.path.isdir(os.path.join(root, d))]
    if not os.path.isdir(train_dir) or not found:
        raise UserError(f"--dataset folder needs {root}/train/<class>/*.jpg|png and {root}/test/<class>/* "
                        f"(or {root}/val/<class>/*); see README 'Your own data'")
    if len(found) == 2:
        warn(f"{root} has both test/ and val/; the test numbers are on test/ (val/ is not used)")
    return train_dir, os.path.join(root, found[0]), found[0]


def files_source(root, train, test, classes):
    """Fingerprint source of a folder tree: every file (relative to root) with its class name."""
    h = hashlib.sha256()
    prefix = os.path.join(root, "")  # every path was joined onto root; os.path.relpath is 10x slower

    def relative(path):
        return path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, root)
    for split, samples in (("train", train), ("test", test)):
        for path, label in samples:
            h.update(f"{split}\0{relative(path)}\0{classes[label]}\n".encode("utf-8", "surrogateescape"))
    return {"train_images": len(train), "content_sha256": h.hexdigest()}
