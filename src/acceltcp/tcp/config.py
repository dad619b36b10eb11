"""Per-connection TCP configuration (what `setsockopt` and stack defaults set)."""

from dataclasses import dataclass, replace


@dataclass(slots=True)
class TcpConfig:
    mss: int = 1460                 # MSS we advertise (RFC 9293 §3.7.1); MTU 1500 - 40
    wscale: int | None = 7          # our window shift (RFC 7323 §2); None: do not offer
    sack: bool = True               # offer SACK-permitted (RFC 2018)
    timestamps: bool = True         # offer timestamps (RFC 7323 §3)
    rcv_buf: int = 256 * 1024       # receive buffer (bytes): the window we can offer
    snd_buf: int = 256 * 1024       # send buffer (bytes)
    cc: str = "cubic"               # "cubic" | "newreno"
    initial_window: int = 10        # segments (RFC 6928)
    initial_rto: float = 1.0        # RFC 6298 §2.1
    min_rto: float = 0.2            # RFC 6298 says 1 s; 200 ms is what Linux uses
    max_rto: float = 60.0
    max_retries: int = 15           # data retransmissions before the connection is reset
    syn_retries: int = 6            # SYN / SYN-ACK retransmissions
    delayed_ack: float = 0.040      # 0 disables delayed ACKs (RFC 9293 §3.8.6.3)
    ack_every: int = 2              # ACK at least every 2nd full-sized segment (RFC 5681 §4.2)
    nodelay: bool = False           # TCP_NODELAY: disable Nagle (RFC 9293 §3.7.4)
    time_wait: float = 60.0         # 2*MSL (RFC 9293 §3.4.2)
    dupthresh: int = 3              # duplicate ACKs before fast retransmit (RFC 5681 §3.2)
    ts_hz: int = 1000               # timestamp clock (RFC 7323 §5.4: 1 ms .. 1 s per tick)
    zero_copy: bool = True          # keep immutable payloads by reference (AccelTCP §5.2)

    def copy(self, **changes) -> "TcpConfig":
        return replace(self, **changes)
