//! Server settings, the backend choice, and their validation: everything is
//! checked here, before any thread starts, so a bad value fails `start` with
//! a message that names it.

use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// Most slots one shard's connection table can have: io_uring names a
/// slot with 24 bits of an operation's user data.
pub(crate) const MAX_DIRECT_SLOTS: u32 = 1 << 24;

/// Which kernel interface the shards use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where it works, epoll otherwise (the choice and the reason
    /// are logged at start). The environment variable `RINGPORT_BACKEND`
    /// (`io-uring` or `epoll`) overrides the probe, so an operator can force
    /// a backend without rebuilding.
    #[default]
    Auto,
    /// io_uring (Linux 6.0+): pre-posted accepts into direct descriptors, a
    /// provided buffer ring with multishot receive. Direct descriptors do not
    /// use the process's fd table, so each shard holds up to the open-files
    /// limit. Fails to start where io_uring is missing or blocked.
    IoUring,
    /// Edge-triggered epoll: runs on any Linux, in containers whose seccomp
    /// profile blocks io_uring, on gVisor. Every connection is a file
    /// descriptor, so all shards together hold at most the open-files limit.
    Epoll,
}

impl Backend {
    /// The name used by `--backend` and `RINGPORT_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io-uring",
            Backend::Epoll => "epoll",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "io-uring" | "io_uring" | "iouring" | "uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(format!(
                "unknown backend '{other}' (expected auto, io-uring or epoll)"
            )),
        }
    }
}

/// What happens when a message is sent, from another thread or by
/// broadcast, to a connection whose send queue is at `send_queue_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close the connection with [`crate::CloseReason::SlowConsumer`] (default):
    /// the other connections keep being served and memory stays bounded.
    Disconnect,
    /// Drop the message for that connection and count it in
    /// [`crate::Stats::slow_consumers`]; the connection stays open.
    DropMessage,
}

/// What happens to clients that arrive while `max_connections` are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitPolicy {
    /// They wait, and are admitted in turn as places free up (default).
    /// The shards withdraw their accepts, so most wait in the kernel's
    /// listen backlog; the few accepted in the instant the limit was
    /// reached (at most `accepts_in_flight` per shard) are held by the
    /// shard, unread and unseen by the handler, until a place frees
    /// (`Stats::waiting`). Either way the client sees a connected socket
    /// that is not answered yet.
    #[default]
    Wait,
    /// They are refused: a client accepted over the limit is closed at once
    /// (`Stats::rejected`); the others wait in the listen backlog as above
    /// (the kernel completes their handshakes before any accept).
    Refuse,
}

impl std::str::FromStr for LimitPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "wait" => Ok(LimitPolicy::Wait),
            "refuse" => Ok(LimitPolicy::Refuse),
            other => Err(format!(
                "unknown limit policy '{other}' (expected wait or refuse)"
            )),
        }
    }
}

/// Server settings. Every resource has a bound here.
///
/// Built from [`ServerConfig::default`] and then its public fields, one per
/// setting, each documented below (a builder would repeat every field as a
/// method for no gain). `#[non_exhaustive]`: settings added later do not
/// break code written like this:
///
/// ```
/// let mut config = ringport::ServerConfig::default();
/// config.addr = "127.0.0.1:0".parse().unwrap();
/// config.shards = 2;
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Kernel interface: io_uring, epoll, or the best available (default).
    pub backend: Backend,
    /// Address to listen on (each shard binds it with SO_REUSEPORT).
    pub addr: SocketAddr,
    /// Whether to listen at all. A server that does not listen is a client
    /// engine: it only makes outbound connections ([`crate::Server::connect`]).
    pub listen: bool,
    /// Number of shard threads. Default: available cores.
    pub shards: usize,
    /// Connections open at once, over all shards. At the limit, accepting
    /// pauses until one closes; see `at_limit` for the clients that arrive
    /// meanwhile.
    pub max_connections: usize,
    /// What happens to a client that arrives while `max_connections` are
    /// open.
    pub at_limit: LimitPolicy,
    /// Most connections one source may hold at once, over all shards (a
    /// source: an IPv4 address, or an IPv6 network of `ipv6_prefix` bits).
    /// A connection over it is closed at accept, before any byte is read,
    /// and counted in [`crate::Stats::rejected_per_ip`]; it never waits at
    /// `max_connections` nor takes a waiting place. None (default): no
    /// per-source limit. Memory: 48 bytes per `max_connections` place
    /// while set (`crate::admission_table`).
    pub max_connections_per_ip: Option<u32>,
    /// Prefix length by which IPv6 peers are grouped into one source for
    /// `max_connections_per_ip` (0..=128; default 64: one source per
    /// subnet, as a host usually gets a whole /64).
    pub ipv6_prefix: u8,
    /// Called with the peer's and the listener's address before a
    /// connection is admitted; it may refuse it (allow/deny lists, bans).
    /// See [`crate::limits::AcceptFilter`]. None (default): all admitted.
    pub accept_filter: Option<crate::limits::AcceptFilter>,
    /// Bound on the messages one connection may send per second (a token
    /// bucket), with what happens past it. None (default): unbounded.
    pub max_message_rate: Option<crate::limits::MessageRateLimit>,
    /// Connections of one shard that may be in a transport or protocol
    /// handshake at once (TLS today): past it, newly accepted connections
    /// wait unread, in arrival order, until one finishes (their handshake
    /// timeout runs from accept). Established connections are served
    /// meanwhile. Default 256.
    pub max_handshakes_per_shard: usize,
    /// Join a cluster of nodes over NATS (feature `cluster`): broadcasts,
    /// publishes and `send_to` reach the other nodes. None: a lone node.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster_config::ClusterConfig>,
    /// Size of each shard's connection table. io_uring: default
    /// `max_connections` (plus the accepts in flight), since any shard may
    /// end up holding any share of the connections; the table spans as many
    /// rings as it needs (see `connections_per_ring`), created as they fill,
    /// and its memory is used as connections arrive, so a large table costs
    /// little while it is empty. epoll: every connection is a descriptor, so
    /// the default shares the open-files limit (less a reserve) among the
    /// shards.
    pub connections_per_shard: Option<usize>,
    /// io_uring only: direct descriptors per ring. Default, and maximum, the
    /// process's open-files limit, which is the kernel's cap for one ring's
    /// registered file table (direct descriptors do not use the process fd
    /// table, so a shard holds more connections on several rings). Smaller
    /// values only make a shard use more rings (tests do that).
    pub connections_per_ring: Option<usize>,
    /// Receive buffers per shard (power of two; io_uring's provided buffer
    /// ring) and their size in bytes (epoll reads into one buffer of this
    /// size per shard).
    pub recv_buffers: u16,
    /// Size in bytes of each receive buffer (see `recv_buffers`).
    pub recv_buffer_size: usize,
    /// A connection whose queued outbound bytes reach this stops being read
    /// until the queue drains below half of it (its peer is then held back
    /// by TCP flow control).
    pub send_high_water: usize,
    /// Hard bound on a connection's queued outbound bytes. A send from a
    /// handler that finds the queue at the bound fails with
    /// [`crate::SendError::QueueFull`]; other sends follow `slow_consumer`.
    /// Default: `send_high_water` plus the codec's maximum frame, so that
    /// echoing one whole message is never refused.
    pub send_queue_limit: Option<usize>,
    /// What a send from outside the connection's handler call (another
    /// connection's handler, a broadcast, a publish, the `Server`) does when
    /// the queue is at `send_queue_limit`: disconnect the slow consumer
    /// (default) or drop the message.
    pub slow_consumer: SlowConsumerPolicy,
    /// Bytes a paused connection (its send queue at `send_high_water`) may
    /// have waiting in its input backlog: what was already received when
    /// its receive was cancelled. Past it the connection is closed as a
    /// slow consumer. Default (`None`): `recv_buffers × recv_buffer_size`,
    /// the most the kernel can have delivered by then (the io_uring buffer
    /// ring; epoll reads one buffer at a time and stays far below), so only
    /// a lower setting ever closes anyone.
    pub input_backlog_limit: Option<usize>,
    /// Bytes of partial frames (reassembly buffers and backlogs) one shard
    /// may hold over all its connections; the connection whose input grows
    /// past it is closed with [`crate::CloseReason::Overloaded`]. Default
    /// 1 GiB: 2,000 peers each announcing a 16 MiB frame and sending half of
    /// it stay below; a flood of them does not exhaust memory.
    pub reassembly_limit: usize,
    /// Bytes of large reassembly buffers (frames above 64 KiB) one shard
    /// keeps for reuse once their messages are done with
    /// ([`crate::codec::FramePool`]): the next large frame continues in
    /// one instead of growing into fresh memory. Freed when no large frame
    /// needed one for a trim period (2 s). Default 64 MiB (four 16 MiB
    /// frames); 0 keeps none.
    pub frame_pool_limit: usize,
    /// Accepts kept posted per shard (the AcceptEx pre-posting depth).
    pub accepts_in_flight: usize,
    /// The `listen(2)` backlog of each shard's listener (the kernel caps it
    /// at `net.core.somaxconn`).
    pub listen_backlog: i32,
    /// How long `start` retries a listen address that is in use (a server
    /// killed a moment before can hold it for a few milliseconds) before it
    /// fails.
    pub bind_retry: Duration,
    /// Commands (send/broadcast/close from other threads) queued per shard.
    pub command_queue: usize,
    /// Events buffered for the pull API before shards wait for the consumer.
    pub event_queue: usize,
    /// Time a closing connection gets to flush its queue before it is cut.
    pub close_timeout: Duration,
    /// Time `stop` gives connections to flush before cutting them.
    pub stop_timeout: Duration,
    /// Submission queue entries per ring (io_uring backend).
    pub ring_entries: u32,
    /// Period of [`crate::Handler::on_tick`] and of the shard's own housekeeping
    /// (flush deadlines, accept back-off, idle checks).
    pub tick: Duration,
    /// Close a connection that has sent nothing for this long, with
    /// [`crate::CloseReason::IdleTimeout`]. Checked in steps of `tick`, so it fires
    /// between the timeout and the timeout plus about half of it.
    pub idle_timeout: Option<Duration>,
    /// Send an empty message (a zero-length frame; an empty line with the
    /// lines codec) to a connection that has been sent nothing for this
    /// long: it keeps NATs open and lets an idle timeout on the peer's side
    /// tell a quiet peer from a dead one.
    pub heartbeat: Option<Duration>,
    /// A frame must complete within this long of its first byte, or the
    /// connection is closed with [`crate::CloseReason::FrameTimeout`]: the
    /// bound on clients that send a header and then trickle (the slowloris
    /// attack; nginx's `client_body_timeout`, Netty's
    /// `ReadTimeoutHandler`). Any byte resets `idle_timeout`, so only this
    /// catches them. Checked like `idle_timeout`. Off by default.
    pub frame_timeout: Option<Duration>,
    /// With `frame_timeout`: bytes per second a large frame may take on top
    /// of it (a frame of N bytes gets `frame_timeout + N / rate`), so a
    /// 16 MiB upload over a slow link is not cut while a trickle is.
    pub min_receive_rate: Option<u64>,
    /// Speak TLS on every accepted connection (feature `tls`). Default:
    /// plaintext.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsAcceptor>,
    /// A WebSocket listener beside `addr` (feature `websocket`): browsers
    /// and WebSocket clients join the same server (with `tls`: wss).
    #[cfg(feature = "websocket")]
    pub websocket: Option<crate::protocol::WebSocketListener>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            backend: Backend::Auto,
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            listen: true,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 1_000_000,
            at_limit: LimitPolicy::Wait,
            max_connections_per_ip: None,
            ipv6_prefix: 64,
            accept_filter: None,
            max_message_rate: None,
            max_handshakes_per_shard: 256,
            #[cfg(feature = "cluster")]
            cluster: None,
            connections_per_shard: None,
            connections_per_ring: None,
            recv_buffers: 256,
            recv_buffer_size: 64 * 1024,
            send_high_water: 1024 * 1024,
            send_queue_limit: None,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            input_backlog_limit: None,
            reassembly_limit: 1 << 30,
            frame_pool_limit: 64 << 20,
            accepts_in_flight: 64,
            listen_backlog: 4096,
            bind_retry: Duration::from_secs(2),
            command_queue: 65_536,
            event_queue: 65_536,
            close_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            ring_entries: 4096,
            tick: Duration::from_millis(100),
            idle_timeout: None,
            heartbeat: None,
            frame_timeout: None,
            min_receive_rate: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "websocket")]
            websocket: None,
        }
    }
}

impl ServerConfig {
    /// The default configuration, listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        ServerConfig {
            addr,
            ..Default::default()
        }
    }

    pub(crate) fn effective_input_backlog_limit(&self) -> usize {
        self.input_backlog_limit
            .unwrap_or(usize::from(self.recv_buffers).saturating_mul(self.recv_buffer_size))
    }

    pub(crate) fn effective_send_queue_limit(&self, max_frame: usize) -> usize {
        self.send_queue_limit
            .unwrap_or(self.send_high_water.saturating_add(max_frame))
    }

    pub(crate) fn validate(&self) -> std::io::Result<()> {
        let bad = |why: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                why.to_string(),
            ))
        };
        if self.shards == 0 || self.shards > u16::MAX as usize {
            return bad("shards must be between 1 and 65535");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.accepts_in_flight == 0 {
            return bad("accepts_in_flight must be at least 1");
        }
        if self.command_queue == 0 || self.event_queue == 0 {
            return bad("command_queue and event_queue must be at least 1");
        }
        if self.send_high_water == 0 {
            return bad("send_high_water must be at least 1");
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > 32768 {
            return bad("recv_buffers must be a power of two, at most 32768");
        }
        if self.recv_buffer_size == 0 || self.recv_buffer_size > u32::MAX as usize {
            return bad("recv_buffer_size must be between 1 byte and 4 GiB");
        }
        if self.ring_entries == 0 || self.ring_entries > 32768 {
            return bad("ring_entries must be between 1 and 32768");
        }
        if self
            .input_backlog_limit
            .is_some_and(|n| n < self.recv_buffer_size)
        {
            return bad("input_backlog_limit must hold at least one receive (recv_buffer_size)");
        }
        if self.reassembly_limit == 0 {
            return bad("reassembly_limit must be at least 1 byte");
        }
        if self.tick.is_zero() {
            return bad("tick must be longer than zero");
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero())
            || self.heartbeat.is_some_and(|t| t.is_zero())
            || self.frame_timeout.is_some_and(|t| t.is_zero())
        {
            return bad("idle_timeout, heartbeat and frame_timeout must be longer than zero");
        }
        if self.min_receive_rate == Some(0) {
            return bad("min_receive_rate must be at least 1 byte per second");
        }
        if self.max_connections_per_ip == Some(0) {
            return bad("max_connections_per_ip must be at least 1");
        }
        if self.ipv6_prefix > 128 {
            return bad("ipv6_prefix must be between 0 and 128");
        }
        if self
            .max_message_rate
            .is_some_and(|r| r.per_second == 0 || r.burst == 0)
        {
            return bad("max_message_rate: per_second and burst must be at least 1");
        }
        if self.max_handshakes_per_shard == 0 {
            return bad("max_handshakes_per_shard must be at least 1");
        }
        Ok(())
    }
}

/// Descriptors kept free for everything that is not a connection (listeners,
/// eventfds, rings, log files) when the epoll backend sizes its tables.
const EPOLL_FD_RESERVE: usize = 64;

/// The soft open-files limit.
pub(crate) fn open_files_limit() -> io::Result<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX))
}

/// How a shard's connection table is laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tables {
    /// Slots of each shard's table.
    pub per_shard: usize,
    /// io_uring: direct descriptors per ring (epoll: `per_shard`).
    pub per_ring: usize,
    /// What bounds the table, for the start-up log line.
    pub bound: String,
}

/// The connection table of each shard for `backend` (resolved: not
/// `Auto`), and what bounds it.
pub(crate) fn table_size(config: &ServerConfig, backend: Backend) -> io::Result<Tables> {
    let limit = open_files_limit()?;
    let bad = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    let shards = config.shards.max(1);
    if backend == Backend::Epoll {
        let usable = limit.saturating_sub(EPOLL_FD_RESERVE).max(1);
        let cap = (usable / shards).max(1);
        let bound = format!(
            "epoll: every connection is a descriptor; the open-files limit {limit} \
             (less {EPOLL_FD_RESERVE} kept free) is shared by {shards} shards"
        );
        let per_shard = match config.connections_per_shard {
            Some(0) => return bad("connections_per_shard must be at least 1".into()),
            Some(n) if n > cap => {
                return bad(format!(
                    "connections_per_shard {n} exceeds what one shard can hold here ({cap}; \
                     {bound}); use more shards or raise the open-files limit"
                ));
            }
            Some(n) => n,
            None => cap,
        };
        return Ok(Tables {
            per_shard,
            per_ring: per_shard,
            bound,
        });
    }
    let ring_cap = limit.clamp(1, MAX_DIRECT_SLOTS as usize);
    let per_ring = match config.connections_per_ring {
        Some(0) => return bad("connections_per_ring must be at least 1".into()),
        Some(n) if n > ring_cap => {
            return bad(format!(
                "connections_per_ring {n} exceeds the kernel's cap for one ring here: the \
                 open-files limit {limit}"
            ));
        }
        Some(n) => n,
        None => ring_cap,
    };
    let shard_cap = MAX_DIRECT_SLOTS as usize;
    let per_shard = match config.connections_per_shard {
        Some(0) => return bad("connections_per_shard must be at least 1".into()),
        Some(n) if n > shard_cap => {
            return bad(format!(
                "connections_per_shard {n} exceeds the {shard_cap} slots one shard can address"
            ));
        }
        Some(n) => n,
        // Any shard may end up holding any share of the connections
        // (SO_REUSEPORT does not spread clients evenly, and clients held at
        // the limit take slots too): each table may grow to the whole
        // limit. Its memory and rings are used only as connections arrive.
        None => config
            .max_connections
            .saturating_add(config.accepts_in_flight)
            .clamp(1, shard_cap),
    };
    let rings = per_shard.div_ceil(per_ring);
    let bound = format!(
        "io_uring: {per_shard} per shard on up to {rings} ring(s) of {per_ring} direct \
         descriptors (the open-files limit {limit} caps one ring's table; rings are added as \
         they fill)"
    );
    Ok(Tables {
        per_shard,
        per_ring,
        bound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::Auto, Backend::IoUring, Backend::Epoll] {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
        }
        assert_eq!("io_uring".parse::<Backend>(), Ok(Backend::IoUring));
        assert!("kqueue".parse::<Backend>().unwrap_err().contains("kqueue"));
    }

    #[test]
    fn validation_names_the_bad_setting() {
        let bad = ServerConfig {
            recv_buffers: 100,
            ..ServerConfig::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.to_string().contains("recv_buffers"), "{e}");
        assert!(ServerConfig::default().validate().is_ok());
    }

    #[test]
    fn epoll_tables_share_the_open_files_limit() {
        let limit = open_files_limit().unwrap();
        let cfg = ServerConfig {
            shards: 4,
            ..ServerConfig::default()
        };
        let epoll = table_size(&cfg, Backend::Epoll).unwrap().per_shard;
        let uring = table_size(&cfg, Backend::IoUring).unwrap();
        assert!(epoll * 4 <= limit, "{epoll} x 4 over {limit}");
        assert!(uring.per_shard >= epoll);
        assert!(uring.per_ring <= limit);
        let too_many = ServerConfig {
            connections_per_shard: Some(limit),
            ..cfg
        };
        let e = table_size(&too_many, Backend::Epoll).unwrap_err();
        assert!(e.to_string().contains("open-files limit"), "{e}");
    }
}
