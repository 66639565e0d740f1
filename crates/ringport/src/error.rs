//! Why a connection closed ([`CloseReason`]), why a send was not accepted
//! ([`SendError`]) and why a subscribe was refused ([`TopicError`]): a leaf
//! module every other one may use.

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side (after its last frame; our queued replies
    /// were flushed first).
    PeerClosed,
    /// The peer reset the connection, or it broke (errno).
    Reset(i32),
    /// The peer announced a frame over the maximum; nothing was allocated
    /// for it.
    FrameTooLarge {
        /// The length the header announced.
        len: u64,
        /// The codec's maximum.
        max: usize,
    },
    /// The byte stream could not be decoded.
    InvalidFrame(String),
    /// The application closed it.
    Local,
    /// Its send queue hit the bound under [`crate::SlowConsumerPolicy::Disconnect`],
    /// it did not drain its queue within `close_timeout` while closing, or
    /// input it sent while its reading was paused (it did not read its
    /// replies) went past `input_backlog_limit`.
    SlowConsumer,
    /// The server is stopping.
    ServerStopping,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
    /// The peer closed its side in the middle of a frame: `have` bytes of
    /// it had arrived, `missing` more were announced (`None`: its header
    /// was not complete, or the codec cannot tell, e.g. a line without its
    /// end). Queued replies were flushed first.
    TruncatedFrame {
        /// Bytes of the frame that had arrived.
        have: u64,
        /// Bytes still announced, when known.
        missing: Option<u64>,
    },
    /// A frame did not complete within `frame_timeout` (plus the time
    /// `min_receive_rate` allows for its size) of its first byte: a slow
    /// or stalled sender.
    FrameTimeout {
        /// Bytes of the frame that had arrived.
        have: u64,
        /// Bytes still announced, when known.
        missing: Option<u64>,
    },
    /// The shard held more bytes of partial frames (over all its
    /// connections) than `reassembly_limit`, and this connection's input
    /// grew past it: many peers announcing large frames cannot exhaust
    /// memory.
    Overloaded,
    /// TLS failed: the handshake (a certificate not trusted, no common
    /// protocol version, plaintext or garbage sent to a TLS port), a corrupt
    /// record, or a handshake not complete within its timeout.
    Tls(String),
    /// The connection sent messages faster than `max_message_rate` allows
    /// under [`crate::limits::RateLimitPolicy::Close`]; the message over
    /// the budget was not delivered.
    RateLimited,
}

/// Why a send, broadcast or close was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed (or closing): the id is stale. The message
    /// never reaches another connection that reuses the slot.
    Closed,
    /// The connection's send queue is at its bound.
    QueueFull,
    /// The owning shard's command queue is full; retry later.
    Busy,
    /// The payload is larger than the maximum frame size.
    TooLarge,
    /// The server is stopping or stopped.
    Stopped,
    /// The connection's node cannot be reached: no cluster is configured,
    /// the link to the bus is down, or the node is not (or no longer)
    /// heard from.
    Unreachable,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection is closed",
            SendError::QueueFull => "connection's send queue is full",
            SendError::Busy => "shard command queue is full",
            SendError::TooLarge => "message is larger than the maximum frame",
            SendError::Stopped => "server is stopped",
            SendError::Unreachable => "the connection's node is unreachable",
        })
    }
}

impl std::error::Error for SendError {}

/// Longest topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Most topics one connection can be subscribed to at once.
pub const MAX_TOPICS_PER_CONN: usize = 256;

/// Why a subscribe was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The connection is not open on the shard running the callback (a
    /// stale id, or a connection of another shard).
    Closed,
    /// The name is empty or longer than [`MAX_TOPIC_LEN`].
    BadName,
    /// The connection already holds [`MAX_TOPICS_PER_CONN`] subscriptions.
    TooManyTopics,
}

impl std::fmt::Display for TopicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TopicError::Closed => "connection is not open on this shard",
            TopicError::BadName => "topic name is empty or longer than 255 bytes",
            TopicError::TooManyTopics => "connection holds the most topics allowed (256)",
        })
    }
}

impl std::error::Error for TopicError {}
