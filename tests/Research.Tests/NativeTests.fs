module Research.Tests.NativeTests

open System.IO
open System.Diagnostics
open Expecto
open TorchSharp

let tests =
    testList "native" [
        test "libtorch loads and a matrix product runs" {
            use a = torch.arange(6L, dtype = torch.float32).reshape(2L, 3L)
            use b = torch.ones(3L, 2L)
            use c = a.matmul b
            Expect.equal (c.data<float32>().ToArray()) [| 3.0f; 3.0f; 12.0f; 12.0f |] "[[0,1,2],[3,4,5]] · 1 = row sums"
        }
        test "the copied libLibTorchSharp.so has GLIBCXX_3.4.32 marked weak, the package cache's does not change" {
            let lib = Path.Combine(TestSupport.binDir, "libLibTorchSharp.so")
            Expect.isTrue (File.Exists lib) "libLibTorchSharp.so is in the shared output folder"
            let r = TestSupport.runProcess TestSupport.binDir "readelf" [ "-V"; lib ]
            let line = r.Out.Split('\n') |> Array.tryFind (fun l -> l.Contains "Name: GLIBCXX_3.4.32")
            match line with
            | Some l -> Expect.stringContains l "WEAK" "the requirement is weak"
            | None -> () // a TorchSharp built against an older libstdc++ has no such requirement: nothing to patch
        }
    ]
