/// Hessian-vector products by double backward, checked against closed forms.
module Research.Tests.HessianTests

open Expecto
open TorchSharp
open type TorchSharp.torch
open Research.Core.Hessian

let private abortName = "the textbook product (create_graph without retain_graph, then a second grad) aborts the process with exit 134: the hazard HessianVector.Product is built to avoid"

let tests =
    testList "hessian" [
        test abortName {
            if System.Environment.GetEnvironmentVariable "RESEARCH_SHOW_ABORT" = "1" then
                // Inside the child process: the pattern that must never appear in the framework.
                let x = torch.randn([| 4L |], dtype = float64).requires_grad_(true)
                let g = torch.autograd.grad([| (x * x * x).sum() |], [| x |], create_graph = true)
                torch.autograd.grad([| g[0].sum() |], [| x |]) |> ignore
            else
                let r = Research.Tests.TestSupport.runProcessWith [ "RESEARCH_SHOW_ABORT", "1" ] (System.IO.Path.GetTempPath()) "dotnet"
                            [ System.IO.Path.Combine(Research.Tests.TestSupport.binDir, "Research.Tests.dll"); "--filter-test-case"; "the textbook product" ]
                Expect.equal r.ExitCode 134 (sprintf "aborted (SIGABRT), not an exception .NET can catch: %s" (r.Err + r.Out).[.. 300])
                Expect.stringContains (r.Err + r.Out) "Trying to backward through the graph a second time" "libtorch's reason"
        }
        test "H v of L = ½ xᵀAx equals A v (max abs error ≤ 1e-5, float64), and 200 products in a row on one parameter never reuse a double-backward graph (libtorch would abort the process)" {
            use _ = torch.NewDisposeScope()
            let n = 12L
            let g = torch.Generator(seed = 5UL)
            let m = torch.randn([| n; n |], dtype = float64, generator = g)
            let a = m + m.t()                                           // symmetric: the Hessian of ½ xᵀAx is A
            let x = torch.randn([| n |], dtype = float64, generator = g).requires_grad_(true)
            let loss () = 0.5 * x.dot(a.matmul x)
            for i in 1 .. 200 do
                use step = torch.NewDisposeScope()
                let v = torch.randn([| n |], dtype = float64, generator = g)
                let hv = (HessianVector.Product(loss, [| x |], [| v |]))[0]
                let err = (hv - a.matmul v).abs().max().item<float>()
                if err > 1e-5 then failtestf "product %d: max abs error %g" i err
        }
        test "H is symmetric through an MLP with tanh: uᵀ(Hv) = vᵀ(Hu) within 1e-9 relative (float64)" {
            use _ = torch.NewDisposeScope()
            let g = torch.Generator(seed = 9UL)
            let w1 = (torch.randn([| 6L; 4L |], dtype = float64, generator = g) * 0.5).requires_grad_(true)
            let w2 = (torch.randn([| 3L; 6L |], dtype = float64, generator = g) * 0.5).requires_grad_(true)
            let x = torch.randn([| 20L; 4L |], dtype = float64, generator = g)
            let y = torch.randint(0L, 3L, [| 20L |], generator = g)
            let loss () = nn.functional.cross_entropy(torch.tanh(x.matmul(w1.t())).matmul(w2.t()), y)
            let ps = [| w1; w2 |]
            let rand () = ps |> Array.map (fun p -> torch.randn(p.shape, dtype = float64, generator = g))
            let dot (a: Tensor[]) (b: Tensor[]) = Array.map2 (fun (p: Tensor) (q: Tensor) -> (p * q).sum().item<float>()) a b |> Array.sum
            for _ in 1 .. 10 do
                let u, v = rand (), rand ()
                let uhv = dot u (HessianVector.Product(loss, ps, v))
                let vhu = dot v (HessianVector.Product(loss, ps, u))
                Expect.floatClose { absolute = 1e-12; relative = 1e-9 } uhv vhu "uᵀHv = vᵀHu"
        }
    ]
