"""fuse/bdi.py: the mount's device from mountinfo, without touching the mount."""

from s3pvefs.fuse.bdi import device_of

MOUNTINFO = """\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
45 22 0:40 / /mnt/s3 rw,nosuid,nodev,relatime - fuse.s3pvefs s3pvefs:b/p rw,user_id=0,group_id=0
46 22 0:41 / /mnt/with\\040space rw,nosuid,nodev,relatime - fuse.s3pvefs s3pvefs:b rw,user_id=0,group_id=0
47 22 0:50 / /mnt/s3 rw,nosuid,nodev,relatime - fuse.s3pvefs s3pvefs:b/q rw,user_id=0,group_id=0
48 22 0:51 / /mnt/plain rw - tmpfs tmpfs rw
"""


def test_the_last_fuse_mount_on_the_path_wins(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert device_of("/mnt/s3", str(info)) == "0:50"  # mounted over the first
    assert device_of("/mnt/with space", str(info)) == "0:41"
    assert device_of("/mnt/plain", str(info)) is None  # not FUSE
    assert device_of("/mnt/none", str(info)) is None
