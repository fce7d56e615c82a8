//! `trainmesh genesis new`: validators, initial balances and parameters into a genesis file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use trainmesh_contracts::{Address, Amount, Genesis, GenesisAccount, GenesisValidator, Hash32};

#[derive(Clone, Debug, clap::Args)]
pub struct GenesisArgs {
    #[arg(long, default_value = "trainmesh-testnet")]
    pub chain_id: String,
    /// `ACCOUNT:CONSENSUS:STAKE`: the validator's account (address hex or a key file), its
    /// consensus key (public key hex or a key file), and its stake in TRAIN. Repeat per validator.
    #[arg(long = "validator", required = true)]
    pub validators: Vec<String>,
    /// `ACCOUNT:BALANCE`: an account (address hex or a key file) and its balance in TRAIN.
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Parameters as a JSON file (default: the built-in defaults).
    #[arg(long)]
    pub params: Option<PathBuf>,
    /// Overrides the unit timeout (ms).
    #[arg(long)]
    pub unit_timeout_ms: Option<u64>,
    #[arg(long)]
    pub out: PathBuf,
    /// Where each validator's share of the randomness beacon goes: `beacon-<i>.key`, `i` its
    /// position in `--validator` order. Give validator `i` its file (`beacon_key` in its config)
    /// and delete the rest: whoever holds a threshold of them can predict every draw.
    #[arg(long)]
    pub beacon_out: PathBuf,
}

/// Deals the genesis' randomness beacon (threshold from the validators' stakes), fresh from the
/// OS: returns each validator's share, by position.
pub fn deal_beacon(genesis: &mut Genesis) -> anyhow::Result<Vec<[u8; 32]>> {
    use rand::SeedableRng;
    let threshold = trainmesh_dag::beacon_threshold(&genesis.consensus_stakes())
        .context("validator stakes are too uneven for one beacon share per validator")?;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let (setup, shares) =
        trainmesh_ledger::beacon::deal(genesis.validators.len(), threshold, &mut rng)?;
    genesis.beacon = Some(setup);
    Ok(shares)
}

/// A public key: 64 hex characters, or the public key of a key file.
fn public_key(s: &str) -> anyhow::Result<[u8; 32]> {
    if Path::new(s).is_file() {
        return Ok(trainmesh_actors::node::public_key(&crate::keys::read(
            Path::new(s),
        )?));
    }
    crate::keys::parse(s).with_context(|| format!("{s:?} is neither a key file nor a public key"))
}

/// An address: 64 hex characters, or the address of a key file.
fn address(s: &str) -> anyhow::Result<Address> {
    if Path::new(s).is_file() {
        let public = trainmesh_actors::node::public_key(&crate::keys::read(Path::new(s))?);
        return Ok(Address::from_public_key(&public));
    }
    Address::from_hex(s)
        .map_err(|e| anyhow::anyhow!("{s:?} is neither a key file nor an address: {e}"))
}

fn amount(s: &str) -> anyhow::Result<Amount> {
    let train: u64 = s
        .parse()
        .with_context(|| format!("{s:?} is not a whole number of TRAIN"))?;
    Ok(Amount::from_train(train))
}

/// The genesis the arguments describe, and its validators' beacon shares.
pub fn build(args: &GenesisArgs) -> anyhow::Result<(Genesis, Vec<[u8; 32]>)> {
    let mut validators = Vec::new();
    for v in &args.validators {
        let parts: Vec<&str> = v.rsplitn(3, ':').collect();
        let [stake, consensus, account] = parts[..] else {
            bail!("--validator {v:?}: expected ACCOUNT:CONSENSUS:STAKE");
        };
        validators.push(GenesisValidator {
            address: address(account)?,
            consensus_key: Hash32(public_key(consensus)?),
            stake: amount(stake)?,
        });
    }
    let mut accounts = Vec::new();
    for a in &args.accounts {
        let Some((who, balance)) = a.rsplit_once(':') else {
            bail!("--account {a:?}: expected ACCOUNT:BALANCE");
        };
        accounts.push(GenesisAccount {
            address: address(who)?,
            balance: amount(balance)?,
        });
    }
    let mut params = match &args.params {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parameters in {}", p.display()))?,
        None => trainmesh_contracts::Params::default(),
    };
    if let Some(t) = args.unit_timeout_ms {
        params.unit_timeout_ms = t;
    }
    let mut genesis = Genesis {
        chain_id: args.chain_id.clone(),
        genesis_time_ms: 0,
        accounts,
        validators,
        params,
        consensus: trainmesh_dag::ConsensusParams::default(),
        beacon: None,
    };
    let shares = deal_beacon(&mut genesis)?;
    genesis
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid genesis: {e}"))?;
    Ok((genesis, shares))
}

pub fn new(args: GenesisArgs) -> anyhow::Result<()> {
    let (genesis, shares) = build(&args)?;
    for (i, share) in shares.iter().enumerate() {
        crate::keys::write(&args.beacon_out.join(format!("beacon-{i}.key")), share)?;
    }
    std::fs::write(&args.out, genesis.to_json())
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", hex::encode(genesis.hash()));
    Ok(())
}

pub fn read(path: &Path) -> anyhow::Result<Genesis> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Genesis::from_json(&text).map_err(|e| anyhow::anyhow!("genesis {}: {e}", path.display()))
}
