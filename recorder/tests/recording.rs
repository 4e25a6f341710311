//! Round trips over arbitrary event streams, one test per kind of damage `verify` must name,
//! and crash recovery.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use wardengate_recorder::*;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn small_chunks() -> Limits {
    Limits {
        chunk_raw_bytes: 4096,
        chunk_age: Duration::from_secs(3600),
    }
}

fn output(t_us: u64, text: &str) -> Event {
    Event {
        t_us,
        kind: EventKind::Output {
            channel: 0,
            data: Bytes::from(text.to_string()),
            stderr: false,
        },
    }
}

/// A sealed recording of `n` output events spread over several chunks.
fn sample(dir: &Path, n: u64) -> Seal {
    let mut w = Writer::create(dir, "sess_test", 1_000, small_chunks()).expect("create");
    for i in 0..n {
        w.push(&output(
            i * 1000,
            &format!("line {i}: {}\r\n", "x".repeat(200)),
        ))
        .expect("push");
    }
    w.seal(&key(1), 2_000).expect("seal")
}

/// A recording of 100 events over several chunks, not sealed yet.
fn unsealed(rec: &Path) -> Writer {
    let mut w = Writer::create(rec, "sess_crash", 7, small_chunks()).expect("create");
    for i in 0..100 {
        let text = "some output that fills chunks quickly..................................";
        w.push(&output(i, text)).expect("push");
    }
    w
}

fn problems(dir: &Path) -> Vec<Problem> {
    verify(dir, Some(&key(1).verifying_key()))
        .expect("verify")
        .problems
}

fn arb_event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(channel, d)| {
            EventKind::Input {
                channel,
                data: Bytes::from(d),
            }
        }),
        (
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>()
        )
            .prop_map(|(channel, d, stderr)| EventKind::Output {
                channel,
                data: Bytes::from(d),
                stderr
            }),
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(channel, cols, rows)| {
            EventKind::Resize {
                channel,
                cols,
                rows,
            }
        }),
        ("[a-z-]{0,20}", ".{0,100}").prop_map(|(kind, detail)| EventKind::Marker { kind, detail }),
    ];
    (any::<u64>(), kind).prop_map(|(t_us, kind)| Event { t_us, kind })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn any_event_stream_round_trips_and_verifies(events in proptest::collection::vec(arb_event(), 0..200)) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rec = dir.path().join("r");
        let mut w = Writer::create(&rec, "sess_prop", 5, Limits { chunk_raw_bytes: 1500, chunk_age: Duration::from_secs(60) }).expect("create");
        for e in &events {
            w.push(e).expect("push");
        }
        let seal = w.seal(&key(9), 6).expect("seal");
        prop_assert_eq!(seal.events, events.len() as u64);
        let back = read(&rec).expect("read");
        prop_assert_eq!(&back.events, &events);
        let report = verify(&rec, Some(&key(9).verifying_key())).expect("verify");
        prop_assert!(report.ok(), "{:?}", report.problems);
    }
}

#[test]
fn intact_recording_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seal = sample(dir.path(), 100);
    assert!(seal.chunks >= 4, "want several chunks, got {}", seal.chunks);
    assert_eq!(seal.status, SealStatus::Complete);
    assert!(problems(dir.path()).is_empty());
}

fn chunk(dir: &Path, i: u64) -> std::path::PathBuf {
    dir.join(format!("{i:08}.chunk"))
}

/// A sample recording with `bits` flipped in one byte (`at` of the chunk's length) of chunk
/// `index`: what the verifier finds.
fn flip_and_verify(index: u64, at: impl Fn(&[u8]) -> usize, bits: u8) -> Vec<Problem> {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path(), 100);
    let p = chunk(dir.path(), index);
    let mut b = std::fs::read(&p).expect("read");
    let at = at(&b);
    b[at] ^= bits;
    std::fs::write(&p, b).expect("write");
    problems(dir.path())
}

#[test]
fn modified_body_byte_is_named() {
    let pr = flip_and_verify(1, |b| b.len() - 10, 0x40);
    assert!(
        matches!(pr.first(), Some(Problem::ChunkModified { index: 1, .. })),
        "{pr:?}"
    );
}

#[test]
fn modified_header_byte_breaks_the_chain_at_the_next_chunk() {
    // Byte 20 is inside first_t_us: it decodes fine, but the chunk's hash changed.
    let pr = flip_and_verify(1, |_| 20, 1);
    assert!(
        pr.iter().any(
            |p| matches!(p, Problem::ChunkModified { index: 1, why } if why.contains("chain"))
        ),
        "{pr:?}"
    );
}

#[test]
fn modified_last_chunk_is_caught_by_the_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seal = sample(dir.path(), 100);
    let p = chunk(dir.path(), seal.chunks - 1);
    let mut b = std::fs::read(&p).expect("read");
    b[20] ^= 1;
    std::fs::write(&p, b).expect("write");
    assert_eq!(problems(dir.path()), vec![Problem::FinalHashMismatch]);
}

#[test]
fn missing_chunk_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path(), 100);
    std::fs::remove_file(chunk(dir.path(), 2)).expect("rm");
    let pr = problems(dir.path());
    assert_eq!(pr.first(), Some(&Problem::ChunkMissing(2)), "{pr:?}");
}

#[test]
fn reordered_chunks_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path(), 100);
    let (a, b, t) = (
        chunk(dir.path(), 1),
        chunk(dir.path(), 2),
        dir.path().join("swap"),
    );
    std::fs::rename(&a, &t).expect("mv");
    std::fs::rename(&b, &a).expect("mv");
    std::fs::rename(&t, &b).expect("mv");
    let pr = problems(dir.path());
    assert!(
        pr.contains(&Problem::ChunkOutOfOrder {
            file_index: 1,
            found: 2
        }),
        "{pr:?}"
    );
}

#[test]
fn appended_chunk_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seal = sample(dir.path(), 100);
    std::fs::copy(chunk(dir.path(), 0), chunk(dir.path(), seal.chunks)).expect("cp");
    assert_eq!(
        problems(dir.path()),
        vec![Problem::ChunkAppended(seal.chunks)]
    );
}

#[test]
fn truncated_tail_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seal = sample(dir.path(), 100);
    let p = chunk(dir.path(), seal.chunks - 1);
    let b = std::fs::read(&p).expect("read");
    std::fs::write(&p, &b[..b.len() / 2]).expect("write");
    let pr = problems(dir.path());
    assert_eq!(
        pr.first(),
        Some(&Problem::ChunkTruncated(seal.chunks - 1)),
        "{pr:?}"
    );
}

#[test]
fn wrong_key_and_edited_seal_fail_the_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    sample(dir.path(), 20);
    let r = verify(dir.path(), Some(&key(2).verifying_key())).expect("verify");
    assert_eq!(r.problems, vec![Problem::BadSignature]);
    // Editing a signed field is caught too.
    let p = dir.path().join("seal.json");
    let text = std::fs::read_to_string(&p)
        .expect("seal")
        .replace("\"events\": 20", "\"events\": 19");
    std::fs::write(&p, text).expect("write");
    let pr = problems(dir.path());
    assert!(pr.contains(&Problem::BadSignature), "{pr:?}");
}

#[test]
fn crash_recovery_seals_whole_chunks_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("r");
    let w = unsealed(&rec);
    let written = w.stored_bytes();
    assert!(written > 0);
    drop(w); // a crash: no seal, the open chunk is lost
             // A half-written chunk from the moment of the crash.
    std::fs::write(rec.join("00000099.chunk.tmp"), b"partial").expect("tmp");
    assert_eq!(problems(&rec).first(), Some(&Problem::NoSeal));
    let seal = recover(&rec, &key(1), 99)
        .expect("recover")
        .expect("sealed");
    assert_eq!(seal.status, SealStatus::Truncated);
    assert_eq!(seal.session_id, "sess_crash");
    assert_eq!(seal.started_at_ms, 7);
    assert!(seal.chunks > 0);
    assert!(problems(&rec).is_empty(), "{:?}", problems(&rec));
    assert!(!rec.join("00000099.chunk.tmp").exists());
    // Recovering again changes nothing.
    assert!(recover(&rec, &key(1), 100).expect("again").is_none());
}

#[test]
fn recovery_keeps_the_valid_prefix_before_a_damaged_chunk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("r");
    let w = unsealed(&rec);
    drop(w);
    assert!(chunk(&rec, 1).exists(), "the test needs two whole chunks");
    let p = chunk(&rec, 1);
    let b = std::fs::read(&p).expect("read");
    std::fs::write(&p, &b[..b.len() - 3]).expect("truncate");
    let seal = recover(&rec, &key(1), 9).expect("recover").expect("sealed");
    assert_eq!(seal.chunks, 1);
    assert!(problems(&rec).is_empty(), "{:?}", problems(&rec));
    assert!(
        rec.join("00000001.chunk.unsealed").exists(),
        "damaged tail kept aside for forensics"
    );
}

#[test]
fn unwritable_directory_is_refused_at_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("file");
    let err = Writer::create(&file.join("r"), "s", 0, Limits::default())
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    // A directory that already holds a recording is refused too.
    let rec = dir.path().join("r");
    sample(&rec, 5);
    assert!(Writer::create(&rec, "s", 0, Limits::default()).is_err());
}

#[test]
fn text_export_applies_terminal_control_sequences() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("r");
    let mut w = Writer::create(&rec, "sess_text", 0, Limits::default()).expect("create");
    let ev = |t, s: &str| output(t, s);
    w.push(&Event {
        t_us: 0,
        kind: EventKind::Resize {
            channel: 0,
            cols: 40,
            rows: 5,
        },
    })
    .expect("push");
    for i in 0..30 {
        w.push(&ev(i, &format!("line {i}\r\n"))).expect("push");
    }
    // A progress bar redrawn in place, and an erased word.
    w.push(&ev(40, "progress 10%\rprogress 99%\r\n"))
        .expect("push");
    w.push(&ev(41, "secret-ish\x08\x08\x08\x1b[Kok\r\n"))
        .expect("push");
    w.seal(&key(1), 1).expect("seal");
    let t = text(&read(&rec).expect("read"));
    assert!(t.starts_with("line 0\nline 1\n"), "scrollback kept: {t}");
    assert!(t.contains("line 29\nprogress 99%\nsecret-ok"), "{t}");
    assert!(!t.contains("progress 10%"), "{t}");
}
