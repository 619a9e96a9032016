"""What Proxmox VE sees in a dir storage: its naming rules (names.py), an inventory of
a bucket built from them (inventory.py) and its rendering (render.py), for `s3pvefs ls`."""
