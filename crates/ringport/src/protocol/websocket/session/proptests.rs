//! Property tests of the session: round trips under any fragmentation,
//! masking, compression and read split; arbitrary input.

use proptest::prelude::*;

use super::tests::{Ev, deflate_params, feed, frames_of};
use super::*;
use crate::protocol::websocket::deflate::{DeflateConfig, DeflateParams, Deflater};

/// Messages framed by a client, fragmented at random with random masks
/// and control frames between fragments.
fn encode_messages(
    msgs: &[(bool, Vec<u8>)],
    frag: &[usize],
    compress: Option<&mut Deflater>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut deflater = compress;
    for (i, (text, payload)) in msgs.iter().enumerate() {
        let op = if *text { OpCode::Text } else { OpCode::Binary };
        let (wire, rsv1) = match deflater.as_deref_mut() {
            Some(d) => {
                let mut c = Vec::new();
                d.compress(payload, &mut c);
                (c, true)
            }
            None => (payload.clone(), false),
        };
        let n = frag.get(i).copied().unwrap_or(0).max(1);
        let size = wire.len().div_ceil(n).max(1);
        let chunks: Vec<&[u8]> = if wire.is_empty() {
            vec![&wire[..]]
        } else {
            wire.chunks(size).collect()
        };
        for (j, c) in chunks.iter().enumerate() {
            let first = j == 0;
            let last = j + 1 == chunks.len();
            let mask = (i as u32 * 7919 + j as u32 * 104_729).to_ne_bytes();
            frame::write_frame(
                &mut out,
                last,
                rsv1 && first,
                if first { op } else { OpCode::Continuation },
                c,
                Some(mask),
            );
            if !last && j % 2 == 0 {
                frame::write_frame(&mut out, true, false, OpCode::Ping, b"between", Some(mask));
            }
        }
    }
    out
}

fn message_strategy() -> impl Strategy<Value = Vec<(bool, Vec<u8>)>> {
    prop::collection::vec(
        prop_oneof![
            any::<String>().prop_map(|s| (true, s.into_bytes())),
            prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| (false, b)),
            (0usize..70_000).prop_map(|n| (false, vec![b'z'; n])),
        ],
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn round_trip_any_fragmentation_and_split(
        msgs in message_strategy(),
        frag in prop::collection::vec(1usize..5, 6),
        cuts in prop::collection::vec(0usize..200_000, 0..12),
        compressed in any::<bool>(),
    ) {
        let params = compressed.then(|| deflate_params(&DeflateConfig::default(), "permessage-deflate"));
        let mut deflater = Deflater::new(15, 1);
        let bytes = encode_messages(&msgs, &frag, compressed.then_some(&mut deflater));
        let mut s = Session::server(&SessionConfig::default(), params);
        let (ev, out) = feed(&mut s, &bytes, &cuts);
        let want: Vec<Ev> = msgs.iter().map(|(t, p)| Ev::Msg(if *t { MessageKind::Text } else { MessageKind::Binary }, p.clone())).collect();
        prop_assert_eq!(ev, want);
        prop_assert!(frames_of(&out).iter().all(|(op, p)| *op == OpCode::Pong && p == b"between"));
    }

    #[test]
    fn session_send_round_trips(msgs in message_strategy(), compressed in any::<bool>(), cuts in prop::collection::vec(0usize..200_000, 0..6)) {
        let params = compressed.then(|| DeflateParams { min_compress_len: 16, ..deflate_params(&DeflateConfig::default(), "permessage-deflate; client_max_window_bits=10; server_max_window_bits=11") });
        let mut c = Session::client(&SessionConfig::default(), params);
        let mut s = Session::server(&SessionConfig::default(), params);
        let mut to_server = Vec::new();
        let mut to_client = Vec::new();
        for (t, p) in &msgs {
            let kind = if *t { MessageKind::Text } else { MessageKind::Binary };
            c.send(kind, p, &mut to_server).unwrap();
            s.send(kind, p, &mut to_client).unwrap();
        }
        let want: Vec<Ev> = msgs.iter().map(|(t, p)| Ev::Msg(if *t { MessageKind::Text } else { MessageKind::Binary }, p.clone())).collect();
        prop_assert_eq!(&feed(&mut s, &to_server, &cuts).0, &want);
        prop_assert_eq!(&feed(&mut c, &to_client, &cuts).0, &want);
    }

    /// Arbitrary bytes: no panic, and the same outcome however they are cut.
    #[test]
    fn arbitrary_input_same_outcome_for_any_split(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cuts in prop::collection::vec(0usize..400, 0..10),
        deflate in any::<bool>(),
    ) {
        let params = deflate.then(|| deflate_params(&DeflateConfig::default(), "permessage-deflate"));
        let cfg = SessionConfig { max_frame: 200, max_message: 300, ..SessionConfig::default() };
        let whole = feed(&mut Session::server(&cfg, params), &bytes, &[]);
        let split = feed(&mut Session::server(&cfg, params), &bytes, &cuts);
        prop_assert_eq!(whole, split);
    }
}
