"""The daemon's checks before it touches S3: the staging directory is private (made or
tightened to 0700, refused when it is not a directory of ours), and /dev/fuse is a
character device that can be opened. The same on a real mount: tests/mount/
test_security.py and tests/mount/test_cli_errors.py::test_no_usable_dev_fuse_is_exit_7."""

from __future__ import annotations

import os
import stat

import pytest

from s3pvefs import bucketaccess, daemon
from s3pvefs.config import CacheConfig, Config
from s3pvefs.errors import ConfigError, MountError


def config_with(cache_dir) -> Config:
    return Config(cache=CacheConfig(cache_dir=str(cache_dir)))


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_new_cache_dir_and_its_staging_are_made_0700(tmp_path):
    cache = tmp_path / "a" / "b" / "cache"
    staging = daemon.prepare_cache_dir(config_with(cache))
    assert staging == str(cache / "staging")
    assert mode(cache) == 0o700 and mode(staging) == 0o700


def test_a_loose_staging_dir_is_tightened_an_admins_cache_dir_is_left(tmp_path):
    cache = tmp_path / "cache"
    (cache / "staging").mkdir(parents=True)
    os.chmod(cache, 0o755)
    os.chmod(cache / "staging", 0o777)
    daemon.prepare_cache_dir(config_with(cache))
    assert mode(cache / "staging") == 0o700 and mode(cache) == 0o755


@pytest.mark.parametrize("what", ["symlink", "file"])
def test_a_staging_that_is_not_our_directory_is_refused(tmp_path, what):
    cache = tmp_path / "cache"
    cache.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chmod(elsewhere, 0o777)
    if what == "symlink":
        (cache / "staging").symlink_to(elsewhere)
    else:
        (cache / "staging").write_text("")
    with pytest.raises(ConfigError) as e:
        daemon.prepare_cache_dir(config_with(cache))
    assert "not a directory owned by" in str(e.value) and "\n" not in str(e.value)
    assert mode(elsewhere) == 0o777  # nothing done through the link


def test_a_staging_dir_of_another_user_is_refused(tmp_path):
    cache = tmp_path / "cache"
    (cache / "staging").mkdir(parents=True)
    os.chown(cache / "staging", 12345, 12345)
    with pytest.raises(ConfigError):
        daemon.prepare_cache_dir(config_with(cache))


def test_fuse_device_missing_or_not_a_device(tmp_path):
    with pytest.raises(MountError) as e:
        daemon.check_fuse_device(str(tmp_path / "fuse"))
    assert e.value.exit_code == bucketaccess.EXIT_NO_FUSE == 7 and "is missing" in str(e.value)
    (tmp_path / "fuse").write_text("")
    with pytest.raises(MountError) as e:
        daemon.check_fuse_device(str(tmp_path / "fuse"))
    assert e.value.exit_code == 7


def test_the_real_fuse_device_passes():
    daemon.check_fuse_device()


def test_exit_codes_are_distinct():
    codes = [bucketaccess.EXIT_OTHER, bucketaccess.EXIT_USAGE, bucketaccess.EXIT_CREDENTIALS, bucketaccess.EXIT_NO_BUCKET,
             bucketaccess.EXIT_UNREACHABLE, bucketaccess.EXIT_MOUNTPOINT, bucketaccess.EXIT_NO_FUSE, bucketaccess.EXIT_CLOCK_SKEW]
    assert codes == [1, 2, 3, 4, 5, 6, 7, 8]


class _PlaneStore:
    def __init__(self):
        self.read_plane = "python"

    def reads_through_plane(self, on):
        self.read_plane = "crt" if on else "python"


def test_ranged_gets_through_the_crt_only_for_a_near_server():
    from s3pvefs.config import Config, StoreConfig
    from s3pvefs.daemon import NEAR_SERVER, choose_read_plane
    for plane, seconds, expect in (("auto", NEAR_SERVER / 3, "crt"), ("auto", 0.030, "python"),
                                   ("python", 0.001, "python")):
        store = _PlaneStore()
        choose_read_plane(store, Config(store=StoreConfig(data_plane=plane)), seconds)
        assert store.read_plane == expect, (plane, seconds)


def test_a_far_server_gets_bigger_read_chunks_and_eager_read_ahead_unless_set():
    from s3pvefs.config import ReadConfig
    from s3pvefs.daemon import FAR_CHUNK_SIZE, NEAR_SERVER, with_reads_for_distance
    default = Config()
    near = with_reads_for_distance(default, NEAR_SERVER / 3)
    assert near.read == ReadConfig(eager_readahead="no") and near.store == default.store
    far = with_reads_for_distance(default, 0.030)
    assert far.read.chunk_size == FAR_CHUNK_SIZE > default.read.chunk_size
    assert far.read.eager_readahead == "yes"
    assert far.read.max_readahead_chunks == default.read.max_readahead_chunks and far.store == default.store
    chosen = Config(read=ReadConfig(chunk_size=4 << 20, eager_readahead="no"))
    assert with_reads_for_distance(chosen, 0.030).read == chosen.read
    assert with_reads_for_distance(Config(read=ReadConfig(eager_readahead="yes")), 0.001).read.eager_readahead == "yes"


class _TimedStore:
    """check_bucket takes the given seconds in turn, or fails where an error is given."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = 0

    async def check_bucket(self):
        import trio
        answer = self.answers[self.calls]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        await trio.sleep(answer)


def test_the_distance_is_a_request_on_an_open_connection_not_the_first():
    # The mount's first HeadBucket also opens the connection and sets aiobotocore up:
    # 24-31 ms against Ceph on loopback. Alone it took a near server for a far one.
    import trio
    import trio.testing
    from s3pvefs.daemon import NEAR_SERVER, round_trip

    async def distance(first, store):
        return await round_trip(store, first)

    clock = trio.testing.MockClock(autojump_threshold=0)
    near = _TimedStore(0.004, 0.003)
    seconds = trio.run(distance, 0.026, near, clock=clock)
    assert seconds == pytest.approx(0.003) and seconds < NEAR_SERVER and near.calls == 2
    far = _TimedStore(0.031, 0.034)
    seconds = trio.run(distance, 0.080, far, clock=clock)
    assert seconds == pytest.approx(0.031) and seconds > NEAR_SERVER
    failing = _TimedStore(0.002, RuntimeError("connection reset"))
    assert trio.run(distance, 0.026, failing, clock=clock) == pytest.approx(0.002)
    broken = _TimedStore(RuntimeError("connection reset"))
    assert trio.run(distance, 0.026, broken, clock=clock) == pytest.approx(0.026) and broken.calls == 1
