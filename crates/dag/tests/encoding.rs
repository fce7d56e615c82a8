//! Property tests of the wire encoding: round trips, and clean rejection of every truncation,
//! of oversized input, of unknown versions and of random bytes.

use proptest::prelude::*;
use trainmesh_dag::encoding::{decode, encode, ENCODING_VERSION, MESSAGE_BYTES_MAX};
use trainmesh_dag::test_dag::{DagBuilder, TestCommittee};
use trainmesh_dag::{
    AuthorityIndex, CertificateRef, ConsensusMessage, DagError, DecodeError, Digest, Round,
    SyncRequest, SyncResponse, Validator, Vote,
};

fn committee() -> &'static TestCommittee {
    static TC: std::sync::OnceLock<TestCommittee> = std::sync::OnceLock::new();
    TC.get_or_init(|| TestCommittee::new(4))
}

/// A message of any kind, from generated parameters.
fn message(kind: u8, author: u32, round: u64, payload: Vec<Vec<u8>>) -> ConsensusMessage {
    let tc = committee();
    let author = AuthorityIndex(author % 4);
    let round = Round(round.max(1));
    let parents: Vec<CertificateRef> = tc
        .committee()
        .indices()
        .map(|a| CertificateRef {
            author: a,
            round: round.prev(),
            digest: Digest([a.0 as u8; 32]),
        })
        .collect();
    let payload = payload.into_iter().map(bytes::Bytes::from).collect();
    let header = tc.header(author, round, parents, payload);
    match kind % 6 {
        0 => ConsensusMessage::Header(header),
        1 => ConsensusMessage::Vote(Vote::new(
            &header,
            AuthorityIndex(0),
            tc.key(AuthorityIndex(0)),
        )),
        2 => ConsensusMessage::Certificate(tc.certify(
            header,
            &[AuthorityIndex(0), AuthorityIndex(1), AuthorityIndex(3)],
        )),
        3 => ConsensusMessage::CertificateSummary(
            tc.certify(
                header,
                &[AuthorityIndex(0), AuthorityIndex(1), AuthorityIndex(2)],
            )
            .summary(),
        ),
        4 => ConsensusMessage::SyncRequest(SyncRequest::Certificates {
            digests: vec![header.digest(), Digest([9; 32])],
        }),
        _ => {
            let dag = DagBuilder::parse(tc, "1: * -> *\n2: A B C -> *");
            ConsensusMessage::SyncResponse(SyncResponse {
                certificates: dag.certificates(),
                rounds_from: Some((Round(1), AuthorityIndex(0))),
            })
        }
    }
}

fn payload() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn round_trip_keeps_every_byte(kind in 0u8..6, author in 0u32..4, round in 1u64..1_000_000, payload in payload()) {
        let m = message(kind, author, round, payload);
        let bytes = encode(&m);
        prop_assert_eq!(bytes[0], ENCODING_VERSION);
        let back: ConsensusMessage = decode(&bytes, MESSAGE_BYTES_MAX).unwrap();
        prop_assert_eq!(&back, &m);
        // Canonical: encoding the decoded value gives the same bytes.
        prop_assert_eq!(encode(&back), bytes);
        // And what was signed still verifies after the trip.
        let v = Validator::new(committee().committee().clone(), Default::default());
        if !matches!(m, ConsensusMessage::Header(_) | ConsensusMessage::Vote(_) | ConsensusMessage::Certificate(_)) {
            return Ok(());
        }
        prop_assert!(v.verify_message(back).is_ok());
    }

    #[test]
    fn every_truncation_is_rejected(kind in 0u8..6, author in 0u32..4, round in 1u64..1_000, payload in payload()) {
        let bytes = encode(&message(kind, author, round, payload));
        for len in 0..bytes.len() {
            let r = decode::<ConsensusMessage>(&bytes[..len], MESSAGE_BYTES_MAX);
            prop_assert!(r.is_err(), "a truncation to {} of {} bytes decoded", len, bytes.len());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX);
        let mut versioned = vec![ENCODING_VERSION];
        versioned.extend_from_slice(&bytes);
        let _ = decode::<ConsensusMessage>(&versioned, MESSAGE_BYTES_MAX);
    }

    #[test]
    fn flipped_bits_never_pass_as_signed(kind in 0u8..2, round in 1u64..1_000, payload in payload(), bit in any::<usize>()) {
        let m = message(kind, 1, round, payload);
        let mut bytes = encode(&m);
        let i = 1 + bit % (bytes.len() - 1);
        bytes[i] ^= 1 << (bit % 8);
        let v = Validator::new(committee().committee().clone(), Default::default());
        if let Ok(changed) = decode::<ConsensusMessage>(&bytes, MESSAGE_BYTES_MAX) {
            // A change that still decodes must not verify, unless it changed only routing
            // fields outside the signature (a vote's round or author hints).
            if let ConsensusMessage::Header(_) = changed {
                prop_assert!(v.verify_message(changed).is_err());
            }
        }
    }
}

#[test]
fn oversized_and_unknown_versions_are_typed_errors() {
    let bytes = encode(&message(0, 0, 5, vec![vec![7; 100]]));
    assert_eq!(
        decode::<ConsensusMessage>(&bytes, 50).unwrap_err(),
        DecodeError::Oversized {
            len_bytes: bytes.len(),
            max_bytes: 50
        }
    );
    let mut wrong = bytes.clone();
    wrong[0] = 99;
    assert_eq!(
        decode::<ConsensusMessage>(&wrong, MESSAGE_BYTES_MAX).unwrap_err(),
        DecodeError::UnsupportedVersion {
            found: 99,
            expected: ENCODING_VERSION
        }
    );
    assert_eq!(
        decode::<ConsensusMessage>(&[], MESSAGE_BYTES_MAX).unwrap_err(),
        DecodeError::Empty
    );
    let mut trailing = bytes;
    trailing.push(0);
    assert!(matches!(
        decode::<ConsensusMessage>(&trailing, MESSAGE_BYTES_MAX).unwrap_err(),
        DecodeError::Malformed { .. }
    ));
}

#[test]
fn stateless_validation_names_the_broken_rule() {
    let tc = committee();
    let v = Validator::new(tc.committee().clone(), Default::default());
    let genesis: Vec<_> = DagBuilder::new(tc)
        .certificates()
        .iter()
        .map(|c| c.reference())
        .collect();
    assert!(genesis.is_empty(), "certificates() leaves genesis out");
    let parents = |n: u32, round: u64| -> Vec<CertificateRef> {
        (0..n)
            .map(|a| CertificateRef {
                author: AuthorityIndex(a),
                round: Round(round),
                digest: Digest([1; 32]),
            })
            .collect()
    };
    // Two parents of four: below quorum.
    let h = tc.header(AuthorityIndex(0), Round(3), parents(2, 2), vec![]);
    assert!(matches!(
        v.verify_header(h).unwrap_err(),
        DagError::ParentsBelowQuorum {
            stake: 2,
            quorum: 3,
            ..
        }
    ));
    // Parents of the wrong round.
    let h = tc.header(AuthorityIndex(0), Round(3), parents(3, 1), vec![]);
    assert!(matches!(
        v.verify_header(h).unwrap_err(),
        DagError::ParentsBelowQuorum { .. }
    ));
    // Round 0 is genesis only.
    let h = tc.header(AuthorityIndex(0), Round(0), vec![], vec![]);
    assert_eq!(
        v.verify_header(h).unwrap_err(),
        DagError::GenesisFromNetwork
    );
    // A header signed by someone else.
    let good = tc.header(AuthorityIndex(0), Round(3), parents(3, 2), vec![]);
    let forged = trainmesh_dag::SignedHeader::with_signature(
        good.header().clone(),
        *tc.header(AuthorityIndex(1), Round(3), parents(3, 2), vec![])
            .signature(),
    );
    assert!(matches!(
        v.verify_header(forged).unwrap_err(),
        DagError::InvalidSignature { what: "header", .. }
    ));
    // Unknown author.
    let mut h = good.header().clone();
    h.author = AuthorityIndex(9);
    let h = trainmesh_dag::SignedHeader::with_signature(h, *good.signature());
    assert_eq!(
        v.verify_header(h).unwrap_err(),
        DagError::UnknownAuthority(AuthorityIndex(9))
    );
    // Wrong epoch.
    let mut h = good.header().clone();
    h.epoch = trainmesh_dag::Epoch(7);
    let h = trainmesh_dag::SignedHeader::new(h, tc.key(AuthorityIndex(0)));
    assert!(matches!(
        v.verify_header(h).unwrap_err(),
        DagError::WrongEpoch { .. }
    ));
    // A certificate with too few votes, and one with a forged vote.
    let c = tc.certify(good.clone(), &[AuthorityIndex(0), AuthorityIndex(1)]);
    assert!(matches!(
        v.verify_certificate(c).unwrap_err(),
        DagError::VotesBelowQuorum {
            stake: 2,
            quorum: 3,
            ..
        }
    ));
    let c = tc.certify(
        good.clone(),
        &[AuthorityIndex(0), AuthorityIndex(1), AuthorityIndex(2)],
    );
    let mut summary = c.summary();
    summary.votes[1].signature.0[3] ^= 1;
    assert!(matches!(
        v.verify_summary(summary).unwrap_err(),
        DagError::InvalidSignature {
            what: "certificate vote",
            ..
        }
    ));
    // A vote signature replayed as a header signature fails (domain separation).
    let vote = Vote::new(&good, AuthorityIndex(0), tc.key(AuthorityIndex(0)));
    let replayed =
        trainmesh_dag::SignedHeader::with_signature(good.header().clone(), vote.signature);
    assert!(v.verify_header(replayed).is_err());
}
