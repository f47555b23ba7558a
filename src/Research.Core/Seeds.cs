using System.Security.Cryptography;
using System.Text;

namespace Research.Core;

/// <summary>
/// Every random stream of a run derives from one root seed by name: seed(name) = first 8 bytes of
/// SHA-256("root:name"). Process-randomised hashes (<c>string.GetHashCode</c>) are never used, so the same
/// config gives the same split, initialisation and data order in every process.
/// </summary>
public static class Seeds
{
    public static long Derive(long root, string name)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{root}:{name}"));
        return BitConverter.ToInt64(hash, 0) & long.MaxValue;
    }

    /// <summary>A CPU generator seeded from (root, name).</summary>
    public static TorchSharp.torch.Generator Generator(long root, string name) =>
        new TorchSharp.torch.Generator((ulong)Derive(root, name));
}
