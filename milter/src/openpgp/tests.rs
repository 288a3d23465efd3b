use super::*;

/// A new-format packet with the shortest length encoding.
fn new_packet(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0 | tag];
    let len = body.len();
    if len < 192 {
        out.push(len as u8);
    } else if len < 8384 {
        let l = len - 192;
        out.push(((l >> 8) as u8) + 192);
        out.push(l as u8);
    } else {
        out.push(0xff);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// A new-format packet forced to the five-octet length form.
fn new_packet_five(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0 | tag, 0xff];
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A legacy-format packet with length type `len_type` (0, 1 or 2).
fn legacy_packet(tag: u8, len_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | (tag << 2) | len_type];
    let len = body.len() as u32;
    match len_type {
        0 => out.push(len as u8),
        1 => out.extend_from_slice(&(len as u16).to_be_bytes()),
        _ => out.extend_from_slice(&len.to_be_bytes()),
    }
    out.extend_from_slice(body);
    out
}

/// A new-format packet whose body is split into partial chunks of
/// `2^power` bytes, ending with a normal length for the rest.
fn partial_packet(tag: u8, power: u8, body: &[u8]) -> Vec<u8> {
    let chunk = 1usize << power;
    let mut out = vec![0xc0 | tag];
    let mut rest = body;
    while rest.len() > chunk {
        out.push(224 + power);
        out.extend_from_slice(&rest[..chunk]);
        rest = &rest[chunk..];
    }
    let last = new_packet(tag, rest);
    out.extend_from_slice(&last[1..]);
    out
}

fn pkesk() -> Vec<u8> {
    new_packet(1, &[3; 60])
}

fn seipd(len: usize) -> Vec<u8> {
    let mut body = vec![0xaa; len];
    body[0] = 1;
    new_packet(18, &body)
}

fn seipd_body(len: usize) -> Vec<u8> {
    let mut body = vec![0x55; len];
    body[0] = 1;
    body
}

fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn accepted_sequences() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("one PKESK, SEIPD", concat(&[pkesk(), seipd(100)])),
        ("three PKESKs", concat(&[pkesk(), pkesk(), pkesk(), seipd(100)])),
        ("SKESK only", concat(&[new_packet(3, &[4; 30]), seipd(50)])),
        ("PKESK and SKESK", concat(&[pkesk(), new_packet(3, &[4; 30]), seipd(50)])),
        ("two-octet length", concat(&[pkesk(), seipd(1000)])),
        ("five-octet length", concat(&[pkesk(), seipd(100_000)])),
        ("five-octet form for a short packet", concat(&[new_packet_five(1, &[3; 10]), new_packet_five(18, &seipd_body(20))])),
        ("partial lengths", concat(&[pkesk(), partial_packet(18, 9, &seipd_body(5000))])),
        ("partial lengths, exact multiple", concat(&[pkesk(), partial_packet(18, 9, &seipd_body(1024))])),
        // Legacy headers carry 4-bit tags, so only the key packets can use
        // them; SEIPD (tag 18) is always new format.
        ("legacy 1-octet", concat(&[legacy_packet(1, 0, &[3; 60]), seipd(100)])),
        ("legacy 2-octet", concat(&[legacy_packet(1, 1, &[3; 300]), legacy_packet(3, 1, &[4; 40]), seipd(1000)])),
        ("legacy 4-octet", concat(&[legacy_packet(3, 2, &[3; 60]), seipd(70_000)])),
        ("SEIPD version 2", concat(&[pkesk(), new_packet(18, &[2, 9, 9, 9])])),
    ];
    for (name, data) in cases {
        assert_eq!(check_packets(&data), Ok(()), "{name}");
        // Any chunking gives the same answer.
        for chunk in [1, 2, 3, 7, 511, 4096] {
            let mut checker = PacketChecker::new();
            for piece in data.chunks(chunk) {
                checker.feed(piece).unwrap_or_else(|e| panic!("{name}, chunks of {chunk}: {e}"));
            }
            assert_eq!(checker.finish(), Ok(()), "{name}, chunks of {chunk}");
        }
    }
}

#[test]
fn refused_sequences() {
    let cases: Vec<(&str, Vec<u8>, PacketProblem)> = vec![
        ("empty", vec![], PacketProblem::Truncated),
        ("text", b"hello world".to_vec(), PacketProblem::NotAPacket { offset: 0 }),
        ("literal packet", new_packet(11, b"bhello"), PacketProblem::ForbiddenPacket { tag: 11, offset: 0 }),
        ("compressed packet", concat(&[pkesk(), new_packet(8, &[1, 2, 3])]), PacketProblem::ForbiddenPacket { tag: 8, offset: 62 }),
        ("signature first", concat(&[new_packet(2, &[4; 10]), seipd(10)]), PacketProblem::ForbiddenPacket { tag: 2, offset: 0 }),
        ("old SED packet", concat(&[pkesk(), new_packet(9, &[0; 10])]), PacketProblem::ForbiddenPacket { tag: 9, offset: 62 }),
        ("AEAD packet (tag 20)", concat(&[pkesk(), new_packet(20, &[1; 10])]), PacketProblem::ForbiddenPacket { tag: 20, offset: 62 }),
        ("SEIPD alone", seipd(100), PacketProblem::NoKeyPacket),
        ("keys only", concat(&[pkesk(), pkesk()]), PacketProblem::Truncated),
        ("two SEIPDs", concat(&[pkesk(), seipd(10), seipd(10)]), PacketProblem::DataAfterSeipd { offset: 74 }),
        ("trailing garbage", concat(&[pkesk(), seipd(10), vec![0]]), PacketProblem::DataAfterSeipd { offset: 74 }),
        ("key after SEIPD", concat(&[pkesk(), seipd(10), pkesk()]), PacketProblem::DataAfterSeipd { offset: 74 }),
        ("truncated body", concat(&[pkesk(), seipd(100)])[..150].to_vec(), PacketProblem::Truncated),
        ("truncated header", concat(&[pkesk(), vec![0xd2, 0xff, 0]]), PacketProblem::Truncated),
        ("partial key packet", vec![0xc1, 0xe9], PacketProblem::PartialKeyPacket { tag: 1 }),
        ("indeterminate legacy length", vec![0x87], PacketProblem::IndeterminateLength { offset: 0 }),
        ("legacy literal packet", legacy_packet(11, 0, b"bhi"), PacketProblem::ForbiddenPacket { tag: 11, offset: 0 }),
        ("unknown SEIPD version", concat(&[pkesk(), new_packet(18, &[7, 1, 2])]), PacketProblem::UnknownSeipdVersion(7)),
        ("empty SEIPD", concat(&[pkesk(), new_packet(18, &[])]), PacketProblem::EmptySeipd),
        ("partial SEIPD cut short", concat(&[pkesk(), vec![0xd2, 0xe9], seipd_body(100)]), PacketProblem::Truncated),
    ];
    for (name, data, want) in cases {
        let mut checker = PacketChecker::new();
        let got = checker.feed(&data).and_then(|()| checker.finish());
        assert_eq!(got, Err(want), "{name}");
    }
}

#[test]
fn memory_does_not_grow_with_the_message() {
    // A 64 MiB SEIPD body is skipped without being stored.
    let mut checker = PacketChecker::new();
    checker.feed(&pkesk()).expect("pkesk");
    let len: u32 = 64 << 20;
    let mut header = vec![0xd2, 0xff];
    header.extend_from_slice(&len.to_be_bytes());
    checker.feed(&header).expect("header");
    let chunk = vec![1u8; 1 << 20];
    for _ in 0..64 {
        checker.feed(&chunk).expect("body");
    }
    assert_eq!(checker.finish(), Ok(()));
    assert!(size_of::<PacketChecker>() < 64);
}
