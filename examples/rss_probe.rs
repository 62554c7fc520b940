//! Peak memory of feature extraction against the number of films: runs `features::extract` on an
//! ImageFolder with the notebook's training transform and prints the resident set size (VmRSS,
//! VmHWM) after every tenth of the work, so growth with the data set shows up at once.
//!
//! ```text
//! cargo run --release --example rss_probe -- DATA_DIR [VIEWS]
//! ```
use covid_cxr::data::ImageFolder;
use covid_cxr::model::{TransferConfig, TransferModel};
use covid_cxr::transforms::Compose;

fn status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string()))
        .map(|kb| format!("{} MB", kb.parse::<u64>().map(|k| k / 1024).unwrap_or(0)))
        .unwrap_or_else(|| "?".into())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    anyhow::ensure!(!args.is_empty(), "usage: rss_probe DATA_DIR [VIEWS]");
    let views: usize = args.get(1).map(|v| v.parse()).transpose()?.unwrap_or(1);
    let ds = ImageFolder::open(&args[0], Compose::notebook_train(299))?;
    let model = TransferModel::pretrained(&TransferConfig::default())?;
    println!("{} films, {views} views; before: rss {} peak {}", ds.len(), status("VmRSS"), status("VmHWM"));
    let mut last = 0;
    let fs = covid_cxr::features::extract(&model, &ds, views, 0, 8, &mut |done, total| {
        if done * 10 / total != last {
            last = done * 10 / total;
            println!("{done}/{total}: rss {} peak {}", status("VmRSS"), status("VmHWM"));
        }
    })?;
    println!("features {:?}; after: rss {} peak {}", fs.features.size(), status("VmRSS"), status("VmHWM"));
    Ok(())
}
