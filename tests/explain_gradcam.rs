//! Grad-CAM on a tiny `tch::nn` model whose evidence location is known.

use covid_cxr::explain::{cam_maps, grad_cam, grad_cam_classes, grad_cam_per_item, overlay, CamModel, Colormap};
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// conv 3x3 (3 -> 3 channels, identity weights) + ReLU + 4x4 average pool = "Mixed_7c";
/// global average pool + linear (3 -> 2) = head. Class 0 reads the red channel, class 1 blue.
struct TinyNet {
    conv: nn::Conv2D,
    fc: nn::Linear,
}

impl TinyNet {
    fn new(vs: &nn::VarStore) -> Self {
        let p = vs.root();
        let mut conv = nn::conv2d(&p / "conv", 3, 3, 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let mut fc = nn::linear(&p / "fc", 3, 2, Default::default());
        tch::no_grad(|| {
            let w = Tensor::zeros([3, 3, 3, 3], (Kind::Float, Device::Cpu));
            for c in 0..3 {
                let _ = w.get(c).get(c).get(1).get(1).fill_(1.0);
            }
            conv.ws.copy_(&w);
            let _ = conv.bs.as_ref().unwrap().shallow_clone().zero_();
            fc.ws.copy_(&Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 0.0, 1.0]).view([2, 3]));
            let _ = fc.bs.as_ref().unwrap().shallow_clone().zero_();
        });
        TinyNet { conv, fc }
    }
}

impl CamModel for TinyNet {
    fn mixed_7c(&self, x: &Tensor) -> Tensor {
        self.conv.forward(x).relu().avg_pool2d([4, 4], [4, 4], [0, 0], false, true, None::<i64>)
    }
    fn head_from_mixed_7c(&self, a: &Tensor) -> Tensor {
        self.fc.forward(&a.mean_dim([2i64, 3].as_slice(), false, Kind::Float))
    }
}

/// 32x32 image: a red patch at rows 20..28, cols 4..12; a blue patch at rows 4..12, cols 20..28.
fn input() -> Tensor {
    let x = Tensor::zeros([1, 3, 32, 32], (Kind::Float, Device::Cpu));
    let _ = x.get(0).get(0).narrow(0, 20, 8).narrow(1, 4, 8).fill_(1.0);
    let _ = x.get(0).get(2).narrow(0, 4, 8).narrow(1, 20, 8).fill_(1.0);
    x
}

fn peak(m: &ndarray::Array2<f32>) -> (usize, usize) {
    m.indexed_iter().fold(((0, 0), f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0
}

#[test]
fn cam_peaks_on_the_evidence_of_each_class() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = TinyNet::new(&vs);
    let x = input();
    let red = cam_maps(&grad_cam(&net, &x, 0).unwrap()).unwrap().remove(0);
    let (r, c) = peak(&red);
    assert!((18..30).contains(&r) && (2..14).contains(&c), "class 0 peak at {r},{c}");
    let blue = cam_maps(&grad_cam(&net, &x, 1).unwrap()).unwrap().remove(0);
    let (r, c) = peak(&blue);
    assert!((2..14).contains(&r) && (18..30).contains(&c), "class 1 peak at {r},{c}");
    // Input size, values in [0, 1], maximum 1.
    assert_eq!(red.dim(), (32, 32));
    assert!(red.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!((red.iter().cloned().fold(0.0, f32::max) - 1.0).abs() < 1e-6);
    // The model's parameters got no gradient from Grad-CAM.
    assert!(!net.conv.ws.grad().defined() || net.conv.ws.grad().abs().sum(Kind::Float).double_value(&[]) == 0.0);
}

#[test]
fn several_classes_of_one_image_in_one_pass() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = TinyNet::new(&vs);
    let x = input();
    let maps = cam_maps(&grad_cam_classes(&net, &x, &[1, 0]).unwrap()).unwrap();
    assert_eq!(maps.len(), 2);
    for (m, class) in maps.iter().zip([1i64, 0]) {
        let one = cam_maps(&grad_cam(&net, &x, class).unwrap()).unwrap().remove(0);
        let diff = m.iter().zip(one.iter()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-6, "class {class}: {diff}");
    }
    assert!(grad_cam_classes(&net, &x, &[]).is_err());
    assert!(grad_cam_classes(&net, &x, &[5]).is_err());
    assert!(grad_cam_classes(&net, &Tensor::cat(&[input(), input()], 0), &[0]).is_err());
}

#[test]
fn batches_with_per_item_classes() {
    let vs = nn::VarStore::new(Device::Cpu);
    let net = TinyNet::new(&vs);
    let x = Tensor::cat(&[input(), input(), input()], 0);
    let maps = cam_maps(&grad_cam_per_item(&net, &x, &[0, 1, 0]).unwrap()).unwrap();
    assert_eq!(maps.len(), 3);
    assert_eq!(maps[0], maps[2]);
    assert!(peak(&maps[0]).0 >= 18 && peak(&maps[1]).0 < 14);
    // Works inside no_grad too (Grad-CAM turns gradients on for itself).
    let inside = tch::no_grad(|| grad_cam(&net, &input(), 0)).unwrap();
    assert_eq!(cam_maps(&inside).unwrap()[0], maps[0]);
}

#[test]
fn overlay_blends_with_opacity() {
    let img = image::RgbImage::from_pixel(32, 32, image::Rgb([200, 200, 200]));
    let cam = ndarray::Array2::<f32>::zeros((8, 8));
    let same = overlay(&img, cam.view(), Colormap::Jet, 0.0).unwrap();
    assert_eq!(same, img);
    let half = overlay(&img, cam.view(), Colormap::Jet, 0.5).unwrap();
    assert_eq!(half.get_pixel(3, 3).0, [100, 100, 164]); // jet(0) = (0, 0, 128)
}
