//! A model summary in the manner of `torchinfo.summary(model, (1, 3, 299, 299))`: one row per
//! block with its output shape, its parameter count and whether it is trained, then the totals
//! of all, trainable and frozen parameters.

use crate::error::Result;
use crate::model::{TransferModel, BLOCK_NAMES, NUM_FEATURES};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// One row of a [`ModelSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    /// Layer name (torchvision's), indented by depth when printed.
    pub name: String,
    /// Layer type ("BasicConv2d", "InceptionA", "Linear", ...).
    pub kind: String,
    /// Nesting depth (0: a block of the model, 1: a layer inside the head).
    pub depth: usize,
    /// Output shape for the summary's input.
    pub output_shape: Vec<i64>,
    /// Parameters (batch-norm running statistics excluded, as torchinfo counts).
    pub params: i64,
    /// Of which trainable.
    pub trainable: i64,
}

/// The summary of a [`TransferModel`] for an input shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Input shape (`N x 3 x H x W`).
    pub input_shape: Vec<i64>,
    /// The rows, in forward order (the auxiliary classifier after `Mixed_6e`, where it branches).
    pub rows: Vec<SummaryRow>,
    /// All parameters.
    pub total: i64,
    /// Trainable parameters.
    pub trainable: i64,
}

impl ModelSummary {
    /// Frozen parameters.
    pub fn frozen(&self) -> i64 {
        self.total - self.trainable
    }
}

fn kind_of(block: &str) -> &'static str {
    match block {
        "maxpool1" | "maxpool2" => "MaxPool2d",
        "Mixed_5b" | "Mixed_5c" | "Mixed_5d" => "InceptionA",
        "Mixed_6a" => "InceptionB",
        "Mixed_6b" | "Mixed_6c" | "Mixed_6d" | "Mixed_6e" => "InceptionC",
        "Mixed_7a" => "InceptionD",
        "Mixed_7b" | "Mixed_7c" => "InceptionE",
        _ => "BasicConv2d",
    }
}

/// Runs one zero image of `height x width` through the model, block by block, and counts the
/// parameters of each block (the frozen backbone's, the head's and the auxiliary classifier's).
///
/// ```no_run
/// use covid_cxr::prelude::*;
/// let m = TransferModel::pretrained(&TransferConfig::default())?;
/// let s = covid_cxr::summary::summary(&m, 299, 299)?;
/// println!("{s}");
/// assert_eq!(s.rows.last().unwrap().output_shape, vec![1, 3]);
/// # Ok::<(), covid_cxr::Error>(())
/// ```
pub fn summary(model: &TransferModel, height: i64, width: i64) -> Result<ModelSummary> {
    let count = |vars: &std::collections::HashMap<String, Tensor>, prefix: &str| -> (i64, i64) {
        vars.iter()
            .filter(|(n, _)| n.starts_with(prefix) && !n.contains("running_") && !n.contains("num_batches"))
            .fold((0, 0), |(all, tr), (_, t)| {
                let k = t.numel() as i64;
                (all + k, tr + if t.requires_grad() { k } else { 0 })
            })
    };
    let backbone = model.backbone_vs.variables();
    let head = model.head_vs.variables();
    let mut rows = Vec::new();
    let input_shape = vec![1, 3, height, width];
    tch::no_grad(|| -> Result<()> {
        let mut y = model.map_input(&Tensor::zeros(input_shape.as_slice(), (Kind::Float, Device::Cpu)));
        for (i, name) in BLOCK_NAMES.iter().enumerate() {
            y = model.net.forward_block(i, &y);
            let (params, trainable) = count(&backbone, &format!("{name}."));
            rows.push(SummaryRow {
                name: name.to_string(),
                kind: kind_of(name).into(),
                depth: 0,
                output_shape: y.size(),
                params,
                trainable,
            });
            if *name == "Mixed_6e" {
                if let Some(aux) = &model.aux {
                    let (params, trainable) = count(&head, "AuxLogits.");
                    rows.push(SummaryRow {
                        name: "AuxLogits".into(),
                        kind: "InceptionAux".into(),
                        depth: 0,
                        output_shape: aux.forward(&y).size(),
                        params,
                        trainable,
                    });
                }
            }
        }
        Ok(())
    })?;
    let c = model.cfg.num_classes;
    let (h0, h1) = model.cfg.hidden;
    rows.push(row("avgpool", "AdaptiveAvgPool2d", 0, vec![1, NUM_FEATURES, 1, 1], (0, 0)));
    rows.push(row("dropout", &format!("Dropout({})", model.cfg.dropout), 0, vec![1, NUM_FEATURES], (0, 0)));
    let (fc_all, fc_tr) = count(&head, "fc.");
    rows.push(row("fc", "Sequential", 0, vec![1, c], (fc_all, fc_tr)));
    let layers: [(&str, String, i64); 6] = [
        ("fc.0", "Linear".into(), h0),
        ("fc.1", "ReLU".into(), h0),
        ("fc.2", "Linear".into(), h1),
        ("fc.3", "ReLU".into(), h1),
        ("fc.4", format!("Dropout({})", model.cfg.dropout), h1),
        ("fc.5", "Linear".into(), c),
    ];
    for (name, kind, out) in layers {
        rows.push(row(name, &kind, 1, vec![1, out], count(&head, &format!("{name}."))));
    }
    if model.cfg.defects.double_softmax {
        rows.push(row("fc.6", "Softmax(dim=1)", 1, vec![1, c], (0, 0)));
    }
    let total = rows.iter().filter(|r| r.depth == 0).map(|r| r.params).sum();
    let trainable = rows.iter().filter(|r| r.depth == 0).map(|r| r.trainable).sum();
    Ok(ModelSummary { input_shape, rows, total, trainable })
}

fn row(name: &str, kind: &str, depth: usize, output_shape: Vec<i64>, (params, trainable): (i64, i64)) -> SummaryRow {
    SummaryRow { name: name.into(), kind: kind.into(), depth, output_shape, params, trainable }
}

fn thousands(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let line = "=".repeat(96);
        writeln!(f, "{line}")?;
        writeln!(f, "{:<44}{:<24}{:>14}{:>14}", "Layer (type)", "Output Shape", "Param #", "Trainable")?;
        writeln!(f, "{line}")?;
        for r in &self.rows {
            let name = format!("{}{} ({})", "  ".repeat(r.depth), r.name, r.kind);
            let trainable = match (r.params, r.trainable) {
                (0, _) => "--",
                (_, 0) => "False",
                (p, t) if p == t => "True",
                _ => "Partial",
            };
            let params = if r.params == 0 { "--".to_string() } else { thousands(r.params) };
            writeln!(f, "{name:<44}{:<24}{params:>14}{trainable:>14}", format!("{:?}", r.output_shape))?;
        }
        writeln!(f, "{line}")?;
        writeln!(f, "Input shape: {:?}", self.input_shape)?;
        writeln!(f, "Total params: {}", thousands(self.total))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable))?;
        writeln!(f, "Non-trainable params: {}", thousands(self.frozen()))?;
        write!(f, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TransferConfig;

    #[test]
    fn shapes_and_counts_of_the_notebook_model() {
        let m = TransferModel::new(&TransferConfig::default()).unwrap();
        let s = summary(&m, 299, 299).unwrap();
        let get = |n: &str| s.rows.iter().find(|r| r.name == n).unwrap();
        assert_eq!(get("Conv2d_1a_3x3").output_shape, vec![1, 32, 149, 149]);
        assert_eq!(get("Mixed_7c").output_shape, vec![1, 2048, 8, 8]);
        assert_eq!(get("AuxLogits").output_shape, vec![1, 3]);
        // the head: 2048*128+128 + 128*64+64 + 64*3+3
        assert_eq!(get("fc").params, 262_272 + 8_256 + 195);
        assert_eq!(get("fc").trainable, get("fc").params);
        // the frozen backbone: torchvision's InceptionV3 without fc and AuxLogits
        let backbone: i64 = s.rows.iter().filter(|r| r.depth == 0 && r.name.starts_with(['C', 'M'])).map(|r| r.params).sum();
        assert_eq!(backbone, 21_785_568);
        assert_eq!(s.total - s.trainable, backbone);
        let text = s.to_string();
        assert!(text.contains("Trainable params: ") && text.contains("Mixed_6e (InceptionC)"), "{text}");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
