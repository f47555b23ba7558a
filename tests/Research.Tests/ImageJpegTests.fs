/// image-folder on JPEG written by Python's PIL (Debian python3-pil, libjpeg), an encoder independent of the reader
/// (StbImageSharp), against PIL's own decode of the same file; and colour → grey against PIL's pixels (issue 30).
module Research.Tests.ImageJpegTests

open System
open System.IO
open Expecto
open Research.Abstractions
open Research.Core
open Research.Core.Data
open Research.Tests.TestSupport
open TorchSharp

let private imageFolder = DataSources.Get "image-folder"

let private request (o: obj) =
    DataRequest(DataKeys("image-folder", [||], 0.1, 32, 256, 0), o, 7L, Stream = fun name -> Seeds.Generator(7L, name))

let private pil = FormatSourceTests.pil

/// The fixture: 30×22 images (not a multiple of the 8 or 16-pixel blocks) of smooth gradients and a sharp-edged square,
/// in class folders a and b of train/ and test/, saved by PIL as JPEG (quality 90) in the given mode and subsampling, and
/// PIL's decode of each file beside it as raw bytes (FILE.raw: H·W·C, row-major, channels last).
let private fixture (dir: string) (mode: string) (subsampling: int) =
    let root = Path.Combine(dir, sprintf "%s-%d" mode subsampling)
    pil dir (sprintf """
root, mode, sub = %A, %A, %d
for split in ['train', 'test']:
    for k, c in enumerate(['a', 'b']):
        os.makedirs(os.path.join(root, split, c), exist_ok=True)
        im = Image.new('RGB', (30, 22))
        s = 1 + k + (split == 'test')
        im.putdata([((8*x + 3*s*y) %% 256, (11*y + 5*x*s) %% 256, 255 if 9 <= x < 20 and 6 <= y < 15 else (40*s) %% 256) for y in range(22) for x in range(30)])
        path = os.path.join(root, split, c, '0.jpg')
        im.convert(mode).save(path, quality=90, subsampling=sub)
        with open(path + '.raw', 'wb') as f:
            f.write(Image.open(path).convert(mode).tobytes())
""" root mode subsampling)
    root

/// Our decode (input × 255, channel-major) against PIL's (channels last) for every pixel of the train and test images:
/// (largest |difference|, mean |difference|) in 0–255 levels.
let private compare (root: string) (color: string) =
    let channels = if color = "rgb" then 3 else 1
    let o = ImageFolderOptions(ImageRoot = root, Color = color, Mean = Array.create channels 0.0, Std = Array.create channels 1.0)
    let s = imageFolder.Load(request o)
    let mutable worst, sum, count = 0.0, 0.0, 0
    for split, batch in [ "train", s.Train; "test", s.Test ] do
        let x = batch[Batch.Input].data<float32>().ToArray()
        for n, c in [ 0, "a"; 1, "b" ] do
            let raw = File.ReadAllBytes(Path.Combine(root, split, c, "0.jpg.raw"))
            for ch in 0 .. channels - 1 do
                for y in 0 .. 21 do
                    for xx in 0 .. 29 do
                        // x = level / 255 in float32: times 255 and rounded is the level itself.
                        let ours = Math.Round(float x[n * channels * 660 + ch * 660 + y * 30 + xx] * 255.0)
                        let d = abs (ours - float raw[(y * 30 + xx) * channels + ch])
                        worst <- max worst d
                        sum <- sum + d
                        count <- count + 1
    s.Train.DisposeTensors(); s.Test.DisposeTensors()
    worst, sum / float count

/// 16×16 random RGB PNGs (PIL, seeded) in class folders a and b of train/ and test/, with PIL's RGB bytes (FILE.rgb) and
/// PIL's convert('L') of them (FILE.L) beside each.
let private greyFixture (dir: string) (root: string) =
    pil dir (sprintf """
root = %A
import random
random.seed(3)
for split in ['train', 'test']:
    for c in ['a', 'b']:
        os.makedirs(os.path.join(root, split, c), exist_ok=True)
        im = Image.new('RGB', (16, 16))
        im.putdata([(random.randrange(256), random.randrange(256), random.randrange(256)) for _ in range(256)])
        path = os.path.join(root, split, c, '0.png')
        im.save(path)
        with open(path + '.rgb', 'wb') as f: f.write(im.tobytes())
        with open(path + '.L', 'wb') as f: f.write(im.convert('L').tobytes())
""" root)

let tests =
    testList "formats-jpeg" [
        test "JPEG written by PIL (quality 90): StbImageSharp's decode is within the stated tolerance of PIL's (libjpeg's) decode of the same file — grey: max ≤ 1 level, mean ≤ 0.05; RGB 4:4:4: max ≤ 2, mean ≤ 0.1; RGB 4:2:0: max ≤ 4, mean ≤ 0.25 (measured 1, 0.019; 2, 0.038; 3, 0.11: the IDCTs and the chroma upsampling differ)" {
            let dir = tempDir "jpeg"
            let cases = [ "L", 0, "grey", 1.0, 0.05; "RGB", 0, "rgb", 2.0, 0.1; "RGB", 2, "rgb", 4.0, 0.25 ]
            let measured = [ for mode, sub, color, _, _ in cases -> compare (fixture dir mode sub) color ]
            for (mode, sub, _, maxLevels, meanLevels), (worst, mean) in List.zip cases measured do
                printfn "jpeg %s subsampling %d: max |ours - PIL| = %g levels, mean %g" mode sub worst mean
                Expect.isLessThanOrEqual worst maxLevels (sprintf "%s %d: the largest difference" mode sub)
                Expect.isLessThanOrEqual mean meanLevels (sprintf "%s %d: the mean difference" mode sub)
        }
        test "colour → grey: an RGB PNG read with color = \"grey\" is stb's luma (77R + 150G + 29B) >> 8 of PIL's pixels, exactly; it differs from PIL's convert('L') (ITU-R 601: 0.299, 0.587, 0.114, rounded) by at most 1 level" {
            let dir = tempDir "grey-luma"
            let root = Path.Combine(dir, "g")
            greyFixture dir root
            let s = imageFolder.Load(request (ImageFolderOptions(ImageRoot = root, Color = "grey", Mean = [| 0.0 |], Std = [| 1.0 |])))
            let mutable pilWorst = 0
            for split, batch in [ "train", s.Train; "test", s.Test ] do
                let x = batch[Batch.Input].data<float32>().ToArray()
                for n, c in [ 0, "a"; 1, "b" ] do
                    let rgb = File.ReadAllBytes(Path.Combine(root, split, c, "0.png.rgb"))
                    let l = File.ReadAllBytes(Path.Combine(root, split, c, "0.png.L"))
                    for p in 0 .. 255 do
                        let ours = int (Math.Round(float x[n * 256 + p] * 255.0))
                        let luma = (77 * int rgb[3 * p] + 150 * int rgb[3 * p + 1] + 29 * int rgb[3 * p + 2]) >>> 8
                        Expect.equal ours luma (sprintf "%s %s pixel %d: (77R + 150G + 29B) >> 8" split c p)
                        pilWorst <- max pilWorst (abs (ours - int l[p]))
            printfn "grey: max |stb luma - PIL convert('L')| = %d levels" pilWorst
            Expect.isLessThanOrEqual pilWorst 1 "against PIL's convert('L')"
            s.Train.DisposeTensors(); s.Test.DisposeTensors()
        }
    ]
