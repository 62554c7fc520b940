//! Dev-side external check: the notebook's recipe against the robust recipe on hold-outs of
//! cxr-small that the training never sees, for two or more seeds.
//!
//! ```sh
//! covid-cxr split ../shared/data/cxr-small/train SPLIT --ratio 0.8,0.2 --seed 1337
//! cargo run --release --example external_check -- SPLIT MANIFEST.csv [SEEDS, e.g. 1337,1338] [--json OUT]
//! ```
//!
//! It reuses the feature cache of `covid-cxr train --data SPLIT --recipe robust --seed 1337`
//! (3 augmented views of SPLIT/train with the training transform, feature seed 1337; one view of
//! SPLIT/train and SPLIT/val with the inference transform), extracting what is missing. Each
//! hold-out is a choice of rows among all 1,004 films: held-out films of either folder are tested
//! (inference view); the training rows are the films of SPLIT/train not held out (the films of
//! SPLIT/val not held out are left unused: they have no augmented views). Two hold-outs:
//!
//! - **source**: test = every film of the Cohen collection (ieee8023: 55 adult covid, 29 adult
//!   pneumonia) and the normal films of 20% of the Kermany patients (normal exists in one source
//!   only, so some normal films must be held out from it for every class to have films on both
//!   sides); train = Hannover covid, Kermany pneumonia, the other Kermany normals. This asks
//!   whether "covid vs pneumonia" learned on Hannover adults vs Kermany children carries over to
//!   adults of another collection; it cannot say anything about normal films from another hospital.
//! - **patient**: 20% of the patients (`split_group`) of every class held out, all sources on both
//!   sides: free of patient leakage, not of the source confound.
//!
//! Per seed: the notebook's head (cached path, its hyperparameters, 15 epochs) and the robust
//! recipe (5-fold CV grouped by patient on the training rows, the documented grid, the chosen head
//! fitted on all training rows); accuracy and macro-F1 on the test rows with bootstrap 95% CIs.

use covid_cxr::data::ImageFolder;
use covid_cxr::features::{cached_features, default_cache_dir, FeatureSet};
use covid_cxr::file_manifest::ManifestIndex;
use covid_cxr::model::{HeadSpec, TransferConfig, TransferModel};
use covid_cxr::robust::{self, CvData, RobustConfig};
use covid_cxr::subgroups::{accuracy_macro_f1, bootstrap_ci};
use covid_cxr::train::{train_head_on_features, History, TrainConfig};
use covid_cxr::transforms::Compose;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::path::PathBuf;
use tch::Tensor;

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn rows(fs: &FeatureSet, idx: &[usize]) -> FeatureSet {
    let t = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
    let views: Vec<Tensor> = (0..fs.views).map(|v| fs.view(v).index_select(0, &t)).collect();
    FeatureSet { features: Tensor::cat(&views, 0), labels: fs.labels.index_select(0, &t), views: fs.views, n: idx.len() }
}

fn main() -> R<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json_out = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).map(PathBuf::from);
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--") && Some(PathBuf::from(a)) != json_out).collect();
    if pos.len() < 2 {
        return Err("usage: external_check SPLIT MANIFEST.csv [SEEDS] [--json OUT]".into());
    }
    let (split, csv) = (PathBuf::from(pos[0]), PathBuf::from(pos[1]));
    let seeds: Vec<u64> = pos
        .get(2)
        .map(|s| s.split(',').map(|x| x.parse().expect("seed")).collect())
        .unwrap_or_else(|| vec![1337, 1338]);
    let wpath = covid_cxr::weights::ensure_pretrained()?;
    let sha = covid_cxr::weights::sha256_file(&wpath)?;
    tch::manual_seed(0);
    let mut model = TransferModel::new(&TransferConfig::default())?;
    covid_cxr::weights::load_backbone(&mut model, &wpath)?;
    let aug_ds = ImageFolder::open(split.join("train"), Compose::notebook_train(299))?;
    let clean_tr = ImageFolder::open(split.join("train"), Compose::notebook_val(299))?;
    let clean_va = ImageFolder::open(split.join("val"), Compose::notebook_val(299))?;
    let dir = default_cache_dir();
    let t0 = std::time::Instant::now();
    let mut cb = |d: usize, t: usize| {
        if d % 200 < 16 {
            eprintln!("features {d}/{t}");
        }
    };
    let (aug, _) = cached_features(&model, &sha, &aug_ds, 3, 1337, 16, &dir, &mut cb)?;
    let (ctr, _) = cached_features(&model, &sha, &clean_tr, 1, 1337, 16, &dir, &mut cb)?;
    let (cva, _) = cached_features(&model, &sha, &clean_va, 1, 1337, 16, &dir, &mut cb)?;
    eprintln!("features: {:.0}s", t0.elapsed().as_secs_f64());
    // the head fits are many small operations: one thread avoids thread synchronisation costs
    tch::set_num_threads(1);
    let n_tr = ctr.n;
    // all films: SPLIT/train then SPLIT/val; clean features of all, augmented of the first n_tr
    let clean = FeatureSet {
        features: Tensor::cat(&[ctr.view(0), cva.view(0)], 0),
        labels: Tensor::cat(&[&ctr.labels, &cva.labels], 0),
        views: 1,
        n: ctr.n + cva.n,
    };
    let mut source = Vec::new();
    let mut group = Vec::new();
    for ds in [&clean_tr, &clean_va] {
        let files: Vec<PathBuf> = ds.samples.iter().map(|(p, _)| p.clone()).collect();
        source.extend(ManifestIndex::load(&csv, "file", "source_repo")?.values_for(&ds.root, &files)?);
        group.extend(ManifestIndex::load(&csv, "file", "split_group")?.values_for(&ds.root, &files)?);
    }
    let labels = Vec::<i64>::try_from(&clean.labels)?;
    let classes = clean_tr.classes.clone();
    let normal = classes.iter().position(|c| c == "normal").expect("normal class") as i64;

    // held-out patients: a seeded 20% of the groups (patients) of class c
    let pick = |c: i64, frac: f64| -> BTreeSet<String> {
        let mut g: Vec<String> =
            (0..labels.len()).filter(|&i| labels[i] == c).map(|i| group[i].clone()).collect::<BTreeSet<_>>().into_iter().collect();
        g.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(42 + c as u64));
        let k = (frac * g.len() as f64).round() as usize;
        g.into_iter().take(k).collect()
    };
    let mut holdouts: Vec<(&str, Vec<bool>)> = Vec::new();
    let normal_held = pick(normal, 0.2);
    holdouts.push((
        "source",
        (0..labels.len())
            .map(|i| source[i].starts_with("ieee8023") || (labels[i] == normal && normal_held.contains(&group[i])))
            .collect(),
    ));
    let mut all_held = BTreeSet::new();
    for c in 0..classes.len() as i64 {
        all_held.extend(pick(c, 0.2));
    }
    holdouts.push(("patient", (0..labels.len()).map(|i| all_held.contains(&group[i])).collect()));

    let mut results = Vec::new();
    for (name, test_mask) in &holdouts {
        let tr: Vec<usize> = (0..n_tr).filter(|&i| !test_mask[i]).collect();
        let te: Vec<usize> = (0..labels.len()).filter(|&i| test_mask[i]).collect();
        let count = |idx: &[usize]| -> Vec<usize> {
            (0..classes.len()).map(|c| idx.iter().filter(|&&i| labels[i] == c as i64).count()).collect()
        };
        let leak = tr.iter().map(|&i| &group[i]).collect::<BTreeSet<_>>().intersection(&te.iter().map(|&i| &group[i]).collect()).count();
        println!("hold-out {name}: train {:?}, test {:?} (classes {classes:?}); patients on both sides: {leak}", count(&tr), count(&te));
        let (ftr, fcl, fte) = (rows(&aug, &tr), rows(&clean, &tr), rows(&clean, &te));
        let yte: Vec<i64> = te.iter().map(|&i| labels[i]).collect();
        for &s in &seeds {
            // the notebook's recipe on the cached features
            tch::manual_seed(s as i64);
            model.reset_head(&HeadSpec::default());
            let cfg = TrainConfig { seed: s, ..TrainConfig::default() };
            let _ = train_head_on_features(&model, &ftr, &fte, &cfg, &classes, History::default(), &mut |_| {})?;
            let nb = predict(&model, &fte)?;
            // the robust recipe
            let groups: Vec<String> = tr.iter().map(|&i| group[i].clone()).collect();
            let cv = CvData::new(&ftr, &fcl, classes.len(), Some(groups))?;
            let rcfg = RobustConfig { seed: s, ..RobustConfig::default() };
            let rec = robust::train_robust(&mut model, &cv, &rcfg, Some("manifest.csv:split_group".into()), &mut |_, _| {})?;
            let rb = predict(&model, &fte)?;
            for (recipe, p, chosen) in [("notebook", nb, String::new()), ("robust", rb, rec.chosen_name.clone())] {
                let (acc, f1) = accuracy_macro_f1(&yte, &p, classes.len());
                let ci = bootstrap_ci(&yte, &p, classes.len(), 1000, 0)?;
                let recall: Vec<String> = (0..classes.len())
                    .map(|c| {
                        let idx: Vec<usize> = (0..yte.len()).filter(|&j| yte[j] == c as i64).collect();
                        let ok = idx.iter().filter(|&&j| p[j] == c as i64).count();
                        format!("{} {:.3}", classes[c], ok as f64 / idx.len().max(1) as f64)
                    })
                    .collect();
                println!(
                    "  seed {s} {recipe:<9} acc {acc:.3} [{:.3}, {:.3}]  macro-F1 {f1:.3} [{:.3}, {:.3}]  recall: {}  {chosen}",
                    ci.accuracy_ci[0],
                    ci.accuracy_ci[1],
                    ci.macro_f1_ci[0],
                    ci.macro_f1_ci[1],
                    recall.join(", ")
                );
                results.push(serde_json::json!({"holdout": name, "seed": s, "recipe": recipe, "accuracy": acc,
                    "macro_f1": f1, "accuracy_ci": ci.accuracy_ci, "macro_f1_ci": ci.macro_f1_ci, "chosen": chosen,
                    "recall": recall}));
            }
            if s == seeds[0] {
                eprint!("{}", robust::format_scores(&rec.scores, rec.chosen));
            }
        }
    }
    if let Some(j) = json_out {
        std::fs::write(&j, serde_json::to_vec_pretty(&results)?)?;
    }
    Ok(())
}

fn predict(model: &TransferModel, fs: &FeatureSet) -> R<Vec<i64>> {
    let p = model.proba_from_features(&fs.view(0)).argmax(-1, false);
    Ok(Vec::<i64>::try_from(&p)?)
}
