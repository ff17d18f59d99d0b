"""Values and buffers cross to workers and back unchanged; large buffers
cross in shared memory."""

import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seedcore
import tasks

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    | st.tuples(inner, inner),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values)
def test_values_round_trip(system, v):
    assert system.submit_process(tasks.echo, v).result(timeout=30) == v


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=3 << 20), st.integers(min_value=0, max_value=255))
def test_large_bytes_round_trip(system, n, fill):
    data = bytes([fill]) * n
    back = system.submit_process(tasks.echo, data).result(timeout=60)
    assert back == data and type(back) is bytes


def test_numpy_arrays_cross_in_shared_memory_and_stay_writable(system):
    np = pytest.importorskip("numpy")
    a = np.arange(1 << 20, dtype=np.float64)
    assert system.submit_process(tasks.array_sum, a).result(timeout=60) == float(a.sum())
    doubled = system.submit_process(tasks.double_array, a).result(timeout=60)
    assert np.array_equal(doubled, a * 2)
    # The received array is the worker's result, writable here.
    doubled[0] = -1
    # The worker writes into its copy; the sender's array is unchanged.
    written = system.submit_process(tasks.write_into, a).result(timeout=60)
    assert written[0] == 42 and a[0] == 0
    # Out-of-band buffers arrive as views of shared memory, not copies of a stream.
    assert isinstance(doubled.base, memoryview) or doubled.base is not None


def test_shared_bytes_cross_without_a_copy(system):
    buf = seedcore.SharedBytes(b"x" * (1 << 20))
    assert system.submit_process(tasks.nbytes, buf).result(timeout=60) == 1 << 20
    back = system.submit_process(tasks.echo, buf).result(timeout=60)
    assert isinstance(back, seedcore.SharedBytes)
    assert bytes(back[:3]) == b"xxx" and len(back) == 1 << 20
    small = seedcore.SharedBytes(16)
    assert bytes(system.submit_process(tasks.echo, small).result(timeout=30)) == b"\0" * 16
    with pytest.raises(ValueError):
        seedcore.SharedBytes(0)
    # Pickled anywhere else it is plain bytes-like state.
    assert bytes(pickle.loads(pickle.dumps(small, 4))) == b"\0" * 16


def test_bytearray_and_memoryview_arguments(system):
    ba = bytearray(b"ab" * 100_000)
    assert system.submit_process(tasks.echo, ba).result(timeout=60) == ba
    assert system.submit_process(tasks.nbytes, ba).result(timeout=60) == len(ba)
