//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

/// A close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: going away (server stopping, page left).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data not consistent with the message type (invalid UTF-8).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: policy violation.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: message too big.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: an extension the client required was not negotiated.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: unexpected condition in the server.
    pub const INTERNAL: CloseCode = CloseCode(1011);

    /// Whether the code may appear in a close frame: 1000–1003, 1007–1011
    /// (those defined by RFC 6455) and the ranges 3000–4999 for libraries
    /// and applications. 1004–1006, 1015, the codes registered later
    /// (1012–1014, as the Autobahn cases 7.9.x expect), the rest of
    /// 1000–2999 and everything outside 1000–4999 are invalid.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A received close frame's payload, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosePayload<'a> {
    /// The status code; [`CloseCode::NO_STATUS`] if the frame had none.
    pub code: CloseCode,
    /// The reason (valid UTF-8, possibly empty).
    pub reason: &'a str,
}

/// Parses a close frame's (unmasked) payload: empty, or a valid code and a
/// UTF-8 reason. `Err` carries the close code to fail with (1002 for a bad
/// length or code, 1007 for a reason that is not UTF-8).
pub fn parse_close_payload(p: &[u8]) -> Result<ClosePayload<'_>, (CloseCode, &'static str)> {
    match p {
        [] => Ok(ClosePayload {
            code: CloseCode::NO_STATUS,
            reason: "",
        }),
        [_] => Err((CloseCode::PROTOCOL, "close payload of one byte")),
        [a, b, rest @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*a, *b]));
            if !code.is_valid_on_wire() {
                return Err((CloseCode::PROTOCOL, "invalid close code"));
            }
            let reason = simdutf8::basic::from_utf8(rest)
                .map_err(|_| (CloseCode::INVALID_DATA, "close reason is not UTF-8"))?;
            Ok(ClosePayload { code, reason })
        }
    }
}

/// Builds a close payload: the code and the reason, the reason cut (at a
/// character boundary) so the payload fits a control frame (125 bytes).
/// [`CloseCode::NO_STATUS`] gives an empty payload.
pub fn close_payload(code: CloseCode, reason: &str, out: &mut [u8; 125]) -> usize {
    if code == CloseCode::NO_STATUS {
        return 0;
    }
    out[..2].copy_from_slice(&code.0.to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    out[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    2 + end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_codes() {
        for c in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(c).is_valid_on_wire(), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1012, 1013, 1014, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_valid_on_wire(), "{c}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(parse_close_payload(b"").unwrap().code, CloseCode::NO_STATUS);
        assert_eq!(
            parse_close_payload(b"\x03").unwrap_err().0,
            CloseCode::PROTOCOL
        );
        let p = parse_close_payload(b"\x03\xe8bye").unwrap();
        assert_eq!((p.code, p.reason), (CloseCode::NORMAL, "bye"));
        assert_eq!(
            parse_close_payload(b"\x03\xed").unwrap_err().0,
            CloseCode::PROTOCOL
        );
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xce\xba\xe1\xbd")
                .unwrap_err()
                .0,
            CloseCode::INVALID_DATA
        );
    }

    #[test]
    fn build_payload_truncates_at_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "é".repeat(100);
        let n = close_payload(CloseCode::GOING_AWAY, &reason, &mut out);
        assert!(n <= 125);
        let p = parse_close_payload(&out[..n]).unwrap();
        assert_eq!(p.code, CloseCode::GOING_AWAY);
        assert_eq!(p.reason.len(), 122);
        assert_eq!(close_payload(CloseCode::NO_STATUS, "x", &mut out), 0);
    }
}
