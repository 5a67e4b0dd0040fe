/* Machine peak for benchmarks/bench.py: n iterations of 12 independent 8-wide (AVX2) FMA
 * chains on each of nt OpenMP threads (Zen 3: 2 FMA pipes x latency 4 needs >= 8 chains).
 * Built by benchmarks/run.sh: cc -O2 -mavx2 -mfma -fopenmp -shared -fPIC. */
#include <immintrin.h>
#include <omp.h>
/* runs n iterations of 12 independent 8-wide FMA chains on each of nt threads; returns flops */
double fma_run(long n, int nt){
  float sink=0;
  #pragma omp parallel num_threads(nt) reduction(+:sink)
  {
    __m256 a0=_mm256_set1_ps(1.0f),a1=_mm256_set1_ps(1.1f),a2=_mm256_set1_ps(1.2f),a3=_mm256_set1_ps(1.3f),a4=_mm256_set1_ps(1.4f),a5=_mm256_set1_ps(1.5f),a6=_mm256_set1_ps(1.6f),a7=_mm256_set1_ps(1.7f),a8=_mm256_set1_ps(1.8f),a9=_mm256_set1_ps(1.9f),a10=_mm256_set1_ps(2.0f),a11=_mm256_set1_ps(2.1f);
    __asm__ volatile("" : "+x"(a0),"+x"(a1),"+x"(a2),"+x"(a3),"+x"(a4),"+x"(a5),"+x"(a6),"+x"(a7),"+x"(a8),"+x"(a9),"+x"(a10),"+x"(a11));
    __m256 b=_mm256_set1_ps(0.9999999f), c=_mm256_set1_ps(1e-7f);
    for(long i=0;i<n;i++){
      a0=_mm256_fmadd_ps(a0,b,c);a1=_mm256_fmadd_ps(a1,b,c);a2=_mm256_fmadd_ps(a2,b,c);a3=_mm256_fmadd_ps(a3,b,c);
      a4=_mm256_fmadd_ps(a4,b,c);a5=_mm256_fmadd_ps(a5,b,c);a6=_mm256_fmadd_ps(a6,b,c);a7=_mm256_fmadd_ps(a7,b,c);
      a8=_mm256_fmadd_ps(a8,b,c);a9=_mm256_fmadd_ps(a9,b,c);a10=_mm256_fmadd_ps(a10,b,c);a11=_mm256_fmadd_ps(a11,b,c);
    }
    __m256 s=_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0,a1),_mm256_add_ps(a2,a3)),_mm256_add_ps(_mm256_add_ps(a4,a5),_mm256_add_ps(a6,a7)));
    s=_mm256_add_ps(s,_mm256_add_ps(_mm256_add_ps(a8,a9),_mm256_add_ps(a10,a11)));
    float o[8]; _mm256_storeu_ps(o,s); sink+=o[0];
  }
  return (double)nt*n*12*16 + (sink==12345.f);
}
