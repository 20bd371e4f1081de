/*
 * Test-only stand-in for Windows' bcryptprimitives.dll, for running the addon under wine.
 *
 * Rust's standard library (1.78 and later) gets random bytes from ProcessPrng in
 * bcryptprimitives.dll, which every supported Windows (10 and later) has. wine 8 has no such
 * DLL, so the addon would fail to load there. This stand-in, built with mingw-w64 by
 * scripts/test-windows.sh and copied into the test wine prefix's system32 only, implements
 * ProcessPrng with RtlGenRandom (advapi32's SystemFunction036), which wine does have.
 *
 * It is never shipped: real Windows loads its own bcryptprimitives.dll.
 */
#include <windows.h>

/* RtlGenRandom: advapi32.dll exports it as SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* BOOL ProcessPrng(PBYTE pbData, SIZE_T cbData): fills the buffer; documented never to fail. */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
    (void)instance;
    (void)reason;
    (void)reserved;
    return TRUE;
}
