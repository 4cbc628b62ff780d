//! Tests of `queue.rs`.
use super::*;
use crate::backfill::record::HEADER_BYTES;

fn payload(n: u8) -> Vec<u8> {
    vec![n; 100]
}

#[test]
fn batches_follow_the_sample_limit_and_acks_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered, Recovered::default());
    for n in 0..10 {
        assert_eq!(queue.push(3, i64::from(n), &payload(n)).unwrap(), 0);
    }
    let batch = queue.peek(7).unwrap().unwrap();
    // Two records of 3; a third would make 9 > 7.
    assert_eq!(batch.samples, 6);
    assert_eq!(batch.payload, [payload(0), payload(1)].concat());
    queue.ack(batch.end, batch.samples).unwrap();
    assert_eq!(queue.unsent_samples(), 24);
    drop(queue);

    let (queue, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.samples, 24);
    let batch = queue.peek(1).unwrap().unwrap();
    assert_eq!(
        batch.samples, 3,
        "at least one record, however small the batch"
    );
    assert_eq!(batch.payload, payload(2));
    let all = queue.peek(1000).unwrap().unwrap();
    assert_eq!(all.samples, 24);
    // Everything sent: no segment left on disk, and the next push starts a new one.
    let mut queue = queue;
    queue.ack(all.end, all.samples).unwrap();
    assert_eq!(queue.bytes(), 0);
    assert!(queue.peek(1000).unwrap().is_none());
    queue.push(1, 99, &payload(9)).unwrap();
    drop(queue);
    let (queue, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.samples, 1);
    assert_eq!(queue.peek(1000).unwrap().unwrap().payload, payload(9));
}

#[test]
fn a_torn_tail_is_cut_off_and_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut queue, _) = Queue::open(dir.path(), 1 << 20).unwrap();
    queue.push(1, 1, &payload(1)).unwrap();
    queue.push(1, 2, &payload(2)).unwrap();
    drop(queue);
    let segment = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (mut queue, recovered) = Queue::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.samples, 1);
    assert_eq!(recovered.cut_bytes, HEADER_BYTES + 100 - 7);
    queue.push(1, 3, &payload(3)).unwrap();
    let batch = queue.peek(100).unwrap().unwrap();
    assert_eq!(batch.payload, [payload(1), payload(3)].concat());
}

#[test]
fn the_byte_limit_drops_the_oldest_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let max = 1024 * 1024;
    let (mut queue, _) = Queue::open(dir.path(), max).unwrap();
    let big = vec![7u8; 10_000];
    let mut dropped = 0;
    let pushed = 300u64;
    for n in 0..pushed {
        dropped += queue.push(2, n as i64, &big).unwrap();
    }
    assert!(queue.bytes() <= max, "{} bytes", queue.bytes());
    assert!(dropped > 0);
    assert_eq!(dropped + queue.unsent_samples(), pushed * 2);
    // The oldest went first: what is left starts later than the first record.
    assert!(queue.oldest_ms().unwrap() > 0);
    drop(queue);
    let (queue, recovered) = Queue::open(dir.path(), max).unwrap();
    assert_eq!(recovered.samples + dropped, pushed * 2);
    assert!(queue.bytes() <= max);
}
