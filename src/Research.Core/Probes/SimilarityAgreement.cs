using TorchSharp;
using static TorchSharp.torch;

namespace Research.Core.Probes;

/// <summary>
/// Whether two representations of the same n items agree on which items are alike: the Spearman rank correlation
/// between their pairwise cosine similarities over the n(n−1)/2 unordered pairs — second-order similarity, as in
/// representational similarity analysis (Kriegeskorte, Mur &amp; Bandettini 2008, "Representational similarity analysis —
/// connecting the branches of systems neuroscience", with a similarity matrix in place of a dissimilarity matrix).
/// </summary>
/// <remarks>
/// Ranks make the measure blind to any strictly increasing change of the similarity scale, and cosine similarity is
/// unchanged by an orthogonal transform or a positive rescaling of a row, so Spearman(X, XQ) = 1 for orthogonal Q. Unlike
/// linear CKA it ignores the magnitude of rows.
/// </remarks>
public static class SimilarityAgreement
{
    /// <summary>
    /// Spearman's ρ between the strict upper triangles of the cosine-similarity matrices of x [n, p] and y [n, q]
    /// (rows are items, n ≥ 3). A zero row has similarity 0 to every item. NaN when either list is constant.
    /// </summary>
    public static double Spearman(Tensor x, Tensor y)
    {
        if (x.dim() != 2 || y.dim() != 2)
            throw new ArgumentException($"similarity agreement compares two representations [n, features]; got shapes [{string.Join(", ", x.shape)}] and [{string.Join(", ", y.shape)}]");
        if (x.shape[0] != y.shape[0])
            throw new ArgumentException($"similarity agreement compares two representations of the same items: x has {x.shape[0]} rows, y has {y.shape[0]}");
        if (x.shape[0] < 3)
            throw new ArgumentException($"a rank correlation over item pairs needs at least 3 items (3 pairs); got {x.shape[0]}");
        return SpearmanOf(UpperSimilarities(x), UpperSimilarities(y));
    }

    /// <summary>
    /// Spearman's rank correlation of two equally long lists: the Pearson correlation of their ranks, tied values sharing
    /// the average of the ranks they span. NaN when either list is constant (its ranks have no variance); a NaN value is
    /// refused (it has no rank).
    /// </summary>
    public static double SpearmanOf(double[] a, double[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"a rank correlation needs lists of one length; got {a.Length} and {b.Length}");
        if (a.Length < 2) throw new ArgumentException($"a rank correlation needs at least 2 values; got {a.Length}");
        return Pearson(AverageRanks(a), AverageRanks(b));
    }

    /// <summary>
    /// The ranks 1…m of the values, ties given the mean of the ranks they occupy. One sort, then one pass over runs of
    /// equal values: a run covering sorted positions i…j−1 has ranks i+1…j, whose mean is (i + 1 + j)/2.
    /// </summary>
    static double[] AverageRanks(double[] values)
    {
        if (values.Any(double.IsNaN)) throw new ArgumentException("a rank correlation cannot rank NaN");
        var order = Enumerable.Range(0, values.Length).ToArray();
        var keys = (double[])values.Clone();
        Array.Sort(keys, order);
        var ranks = new double[values.Length];
        for (int i = 0, j; i < keys.Length; i = j)
        {
            for (j = i + 1; j < keys.Length && keys[j] == keys[i]; j++) { }
            var rank = (i + 1 + j) / 2.0;
            for (var k = i; k < j; k++) ranks[order[k]] = rank;
        }
        return ranks;
    }

    /// <summary>Pearson's correlation, from centred sums (two passes) so that long lists of large ranks lose nothing.</summary>
    static double Pearson(double[] a, double[] b)
    {
        double meanA = a.Average(), meanB = b.Average(), ab = 0, aa = 0, bb = 0;
        for (var i = 0; i < a.Length; i++)
        {
            double da = a[i] - meanA, db = b[i] - meanB;
            ab += da * db;
            aa += da * da;
            bb += db * db;
        }
        return aa > 0 && bb > 0 ? ab / Math.Sqrt(aa * bb) : double.NaN;
    }

    /// <summary>
    /// Cosine similarities of rows i &lt; j, row-major over the strict upper triangle, in float64. Rows are divided by
    /// max(‖xᵢ‖, 1e-12), so a zero row stays zero instead of producing NaN.
    /// </summary>
    static double[] UpperSimilarities(Tensor x)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var rows = x.detach().to(float64, CPU, copy: true);
        var unit = rows.div_(rows.norm(1, keepdim: true).clamp_min(1e-12));
        int n = (int)x.shape[0];
        var similarity = unit.mm(unit.t()).data<double>().ToArray();
        // Copied out row by row in managed code: faster than libtorch's triu_indices + index on a million entries.
        var values = new double[(long)n * (n - 1) / 2];
        var k = 0;
        for (var i = 0; i < n; i++)
            for (var j = i + 1; j < n; j++) values[k++] = similarity[(long)i * n + j];
        return values;
    }
}
