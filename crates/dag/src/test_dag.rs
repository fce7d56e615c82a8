//! A text notation for DAG scenarios, so commit-rule tests read like the papers' figures.
//!
//! One line per round, `ROUND: SPEC; SPEC; ...`, where each `SPEC` is `AUTHORS -> PARENTS`:
//! - `AUTHORS`: letters (`A B C`, `ABC`) or `*` for every authority;
//! - `PARENTS`: `*` for every certificate of the previous round, `-X -Y` for all of them but
//!   X's and Y's, or an explicit list such as `A2 B2 C2`.
//!
//! ```text
//! 1: * -> *
//! 2: A B C -> *
//! 3: A -> A2 B2 C2; B C -> -A
//! ```
//!
//! Certificates carry real signatures: the header by its author, votes by every authority.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::committee::{Authority, Committee};
use crate::crypto::KeyPair;
use crate::messages::{Certificate, CertificateRef, Header, SignedHeader, Vote, VoteSignature};
use crate::types::{AuthorityIndex, Epoch, Round, Stake, TimestampMs};

/// A committee with the keys of all its members.
#[derive(Debug)]
pub struct TestCommittee {
    committee: Committee,
    keys: Vec<KeyPair>,
}

impl TestCommittee {
    /// `n` authorities of stake 1, keys from seeds `0..n`.
    pub fn new(n: usize) -> TestCommittee {
        TestCommittee::with_stakes(&vec![1; n])
    }

    pub fn with_stakes(stakes: &[Stake]) -> TestCommittee {
        let keys: Vec<KeyPair> = (0..stakes.len() as u64).map(KeyPair::from_seed).collect();
        let authorities = keys
            .iter()
            .zip(stakes)
            .map(|(k, &stake)| Authority {
                public_key: k.public(),
                stake,
            })
            .collect();
        let committee = Committee::new(Epoch(0), authorities).expect("valid test committee");
        TestCommittee { committee, keys }
    }

    pub fn committee(&self) -> &Committee {
        &self.committee
    }

    pub fn key(&self, index: AuthorityIndex) -> &KeyPair {
        &self.keys[index.as_usize()]
    }

    /// A fresh copy of an authority's key (a core owns its key).
    pub fn key_copy(&self, index: AuthorityIndex) -> KeyPair {
        KeyPair::from_secret_bytes(&self.keys[index.as_usize()].secret_bytes())
    }

    /// A header signed by its author.
    pub fn header(
        &self,
        author: AuthorityIndex,
        round: Round,
        parents: Vec<CertificateRef>,
        payload: Vec<bytes::Bytes>,
    ) -> SignedHeader {
        let header = Header {
            epoch: self.committee.epoch(),
            chain: self.committee.chain(),
            round,
            author,
            created_at: TimestampMs(round.0 * 100),
            parents,
            payload,
        };
        SignedHeader::new(header, self.key(author))
    }

    /// A certificate over `header` with votes of `voters`.
    pub fn certify(&self, header: SignedHeader, voters: &[AuthorityIndex]) -> Certificate {
        let header = Arc::new(header);
        let votes = voters
            .iter()
            .map(|&v| VoteSignature {
                voter: v,
                signature: Vote::new(&header, v, self.key(v)).signature,
            })
            .collect();
        Certificate::new(header, votes)
    }
}

/// Parses a letter into an authority index.
pub fn authority(letter: char) -> AuthorityIndex {
    assert!(
        letter.is_ascii_uppercase(),
        "authority letters are A-Z, got {letter:?}"
    );
    AuthorityIndex(letter as u32 - 'A' as u32)
}

/// A DAG built from the notation; holds genesis at round 0.
#[derive(Debug)]
pub struct DagBuilder<'a> {
    committee: &'a TestCommittee,
    rounds: BTreeMap<Round, BTreeMap<AuthorityIndex, Certificate>>,
}

impl<'a> DagBuilder<'a> {
    pub fn new(committee: &'a TestCommittee) -> DagBuilder<'a> {
        let genesis = Certificate::genesis(committee.committee())
            .into_iter()
            .map(|c| (c.author(), c))
            .collect();
        DagBuilder {
            committee,
            rounds: BTreeMap::from([(Round::GENESIS, genesis)]),
        }
    }

    /// Builds the DAG described by `text` (see the module documentation).
    pub fn parse(committee: &'a TestCommittee, text: &str) -> DagBuilder<'a> {
        let mut dag = DagBuilder::new(committee);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (round, specs) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("missing ':' in {line:?}"));
            let round = Round(round.trim().parse().expect("round number"));
            for spec in specs.split(';') {
                let (authors, parents) = spec
                    .split_once("->")
                    .unwrap_or_else(|| panic!("missing '->' in {spec:?}"));
                let authors = dag.parse_authors(authors);
                let parents = dag.parse_parents(round, parents);
                for author in authors {
                    dag.add(author, round, parents.clone());
                }
            }
        }
        dag
    }

    fn parse_authors(&self, text: &str) -> Vec<AuthorityIndex> {
        let text = text.trim();
        if text == "*" {
            return self.committee.committee().indices().collect();
        }
        text.chars()
            .filter(|c| !c.is_whitespace())
            .map(authority)
            .collect()
    }

    fn parse_parents(&self, round: Round, text: &str) -> Vec<CertificateRef> {
        let previous = self
            .rounds
            .get(&round.prev())
            .unwrap_or_else(|| panic!("no certificates in round {}", round.prev().0));
        let text = text.trim();
        if text == "*" {
            return previous.values().map(|c| c.reference()).collect();
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        if tokens.iter().all(|t| t.starts_with('-')) {
            let excluded: Vec<AuthorityIndex> = tokens
                .iter()
                .map(|t| authority(t.chars().nth(1).expect("letter after '-'")))
                .collect();
            return previous
                .values()
                .filter(|c| !excluded.contains(&c.author()))
                .map(|c| c.reference())
                .collect();
        }
        tokens
            .iter()
            .map(|t| {
                let author = authority(t.chars().next().expect("letter"));
                let r: u64 = t[1..].parse().expect("round after letter");
                assert_eq!(
                    r,
                    round.0 - 1,
                    "parent {t} must be of round {}",
                    round.0 - 1
                );
                previous
                    .get(&author)
                    .unwrap_or_else(|| panic!("parent {t} does not exist"))
                    .reference()
            })
            .collect()
    }

    /// Adds a certificate of `author` at `round` over `parents`, voted by every authority.
    pub fn add(
        &mut self,
        author: AuthorityIndex,
        round: Round,
        mut parents: Vec<CertificateRef>,
    ) -> &Certificate {
        parents.sort_by_key(|p| p.author);
        let payload = vec![bytes::Bytes::from(format!("tx-{author}{}", round.0))];
        let header = self.committee.header(author, round, parents, payload);
        let voters: Vec<AuthorityIndex> = self.committee.committee().indices().collect();
        let certificate = self.committee.certify(header, &voters);
        self.rounds
            .entry(round)
            .or_default()
            .insert(author, certificate);
        &self.rounds[&round][&author]
    }

    pub fn certificate(&self, author: AuthorityIndex, round: Round) -> &Certificate {
        &self.rounds[&round][&author]
    }

    /// The certificate named like `B3`.
    pub fn named(&self, name: &str) -> &Certificate {
        let author = authority(name.chars().next().expect("letter"));
        self.certificate(author, Round(name[1..].parse().expect("round")))
    }

    /// Every non-genesis certificate, in (round, author) order.
    pub fn certificates(&self) -> Vec<Certificate> {
        self.rounds
            .range(Round(1)..)
            .flat_map(|(_, v)| v.values().cloned())
            .collect()
    }
}

/// Names a certificate like the notation: `B3`.
pub fn name(certificate: &Certificate) -> String {
    format!("{}{}", certificate.author(), certificate.round().0)
}
