//! A batch resize of images in worker processes: synthetic RGB images are
//! generated here, each is downscaled by a box filter in a process task,
//! and the pixels cross to the worker and back as [`SharedBytes`] (shared
//! memory: no copy through the IPC channel). A decoder or codec that may
//! crash belongs in a process; one image that fails does not stop the
//! batch.
//!
//! Run with `cargo run --release -p seedcore --example image_resize`.

use seedcore::{ChunkSize, ConcurrentSystem, SharedBytes, TaskOptions};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// An RGB image, 3 bytes per pixel, row by row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Image {
    width: u32,
    height: u32,
    pixels: SharedBytes,
}

seedcore::process_task! {
    /// Downscales `img` by `factor` in both directions: each output pixel
    /// is the mean of a `factor` x `factor` block.
    fn downscale(img: Image, factor: u32) -> Result<Image, String> {
        box_filter(&img, factor)
    }
}

/// The box filter (also run here, to check the workers' results).
fn box_filter(img: &Image, factor: u32) -> Result<Image, String> {
    if factor == 0 || img.width % factor != 0 || img.height % factor != 0 {
        return Err(format!(
            "{}x{} does not divide by {factor}",
            img.width, img.height
        ));
    }
    let (w, f) = (img.width as usize, factor as usize);
    let (ow, oh) = (w / f, img.height as usize / f);
    let src = &img.pixels[..];
    let mut out = vec![0u8; ow * oh * 3];
    let area = (f * f) as u32;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut acc = [0u32; 3];
            for y in oy * f..(oy + 1) * f {
                let row = &src[(y * w + ox * f) * 3..(y * w + (ox + 1) * f) * 3];
                for px in row.chunks_exact(3) {
                    acc[0] += u32::from(px[0]);
                    acc[1] += u32::from(px[1]);
                    acc[2] += u32::from(px[2]);
                }
            }
            let o = (oy * ow + ox) * 3;
            for c in 0..3 {
                out[o + c] = (acc[c] / area) as u8;
            }
        }
    }
    Ok(Image {
        width: ow as u32,
        height: oh as u32,
        pixels: SharedBytes::from_vec(out),
    })
}

/// A synthetic image: gradients and a checkerboard that depend on `seed`.
fn generate(seed: u32, width: u32, height: u32) -> std::io::Result<Image> {
    let mut pixels = SharedBytes::new((width * height * 3) as usize)?;
    let buf = pixels.make_mut();
    for y in 0..height {
        for x in 0..width {
            let i = ((y * width + x) * 3) as usize;
            let check = if (x / 16 + y / 16 + seed) % 2 == 0 {
                40
            } else {
                0
            };
            buf[i] = ((x * 255 / width) as u8).wrapping_add(check);
            buf[i + 1] = ((y * 255 / height) as u8).wrapping_add(seed as u8);
            buf[i + 2] = ((x + y + seed) % 256) as u8;
        }
    }
    Ok(Image {
        width,
        height,
        pixels,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In a worker process this serves tasks and never returns.
    seedcore::init();
    let system = ConcurrentSystem::new()?;
    let count = 48u32;
    let factor = 4;

    let t = Instant::now();
    let mut images = Vec::new();
    for i in 0..count {
        // Image 13 has a size the filter cannot divide: its error comes
        // back in its place and the others go on.
        let (w, h) = if i == 13 { (1022, 766) } else { (1024, 768) };
        images.push((generate(i, w, h)?, factor));
    }
    println!("generated {count} images in {:?}", t.elapsed());
    let originals: Vec<Image> = images.iter().map(|(img, _)| img.clone()).collect();

    let t = Instant::now();
    let results: Vec<_> = system
        .map_process(images, downscale)
        // One image per task: each is already a lot of work.
        .chunk_size(ChunkSize::Fixed(1))
        .options(TaskOptions::new().timeout(Duration::from_secs(30)))
        .progress(true)
        .ordered()
        .collect();
    let took = t.elapsed();

    let (mut ok, mut failed) = (0, 0);
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(small) => {
                // Check the worker's pixels against the same filter here.
                let local = box_filter(&originals[i], factor)?;
                assert_eq!((small.width, small.height), (local.width, local.height));
                assert_eq!(&small.pixels[..], &local.pixels[..], "image {i}");
                ok += 1;
            }
            Err(e) => {
                println!("image {i}: {e}");
                failed += 1;
            }
        }
    }
    let mb = originals.iter().map(|i| i.pixels.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "downscaled {ok} images by {factor} ({mb:.0} MB in) in {took:?} on {} worker processes; {failed} failed",
        system.config().processes.core
    );
    assert_eq!((ok, failed), (count as usize - 1, 1));
    Ok(())
}
