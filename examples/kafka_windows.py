"""Per-device sliding windows for time-series models, and malformed messages skipped and counted.

Run: python examples/kafka_windows.py   (uses $TENSORFEED_KAFKA or librdkafka's mock cluster)
"""

from __future__ import annotations

from kafka_quickstart import telemetry_topic

import tensorfeed as tfd


def main() -> None:
    bootstrap, topic, _cluster = telemetry_topic()
    # --8<-- [start:windows]
    stream = tfd.KafkaStream(bootstrap, topic, on_error="skip")
    windows = stream.windows(
        key="device_id",  # one buffer per device (produce with the device as message key)
        size=32,  # rows per window
        step=8,  # a new window every 8 rows of a device
        features=["temperature", "vibration"],
        target="anomaly",  # y: the target over the window
        max_keys=10_000,  # open devices; the least recently updated is evicted (counted)
    )
    loader = tfd.DataLoader(windows, batch_size=64, num_workers=2)
    for x, y in loader:
        assert x.shape[1:] == (32, 2) and y.shape[1:] == (32,)
    print(windows.counts(loader))  # {'windows': ..., 'evicted': 0}
    print(stream.counts(loader))  # {'delivered': ..., 'skipped': 0}: messages below the checkpoint
    # --8<-- [end:windows]
    assert windows.counts(loader)["windows"] == 16 * ((4000 // 16 - 32) // 8 + 1)


if __name__ == "__main__":
    main()
