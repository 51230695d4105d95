#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include "peftkit_kernels.h"
// Driver of scripts/bench_quant_kernels.sh: the C kernels of the work tree against those of a git revision (their
// symbols renamed old_*), one thread, process CPU time, same data, interleaved runs.
void old_pk_quantize_act(const float *x, int64_t n, int8_t *xq, float *xd, int16_t *xs);
void old_pk_matvec_rows(int isa, int type, const void *w, size_t row_bytes, int64_t r0, int64_t r1, int64_t n,
                    const int8_t *xq, const float *xd, const int16_t *xs, float *y);
static double now(void){struct timespec t;clock_gettime(CLOCK_PROCESS_CPUTIME_ID,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static uint64_t s=88172645463325252ull; static uint64_t rnd(void){s^=s<<13;s^=s>>7;s^=s<<17;return s;}
static int bsz(int t){return t>=12&&t<=14?256:32;}
static int bby(int t){switch(t){case 8:return 34;case 2:return 18;case 3:return 20;case 6:return 22;case 7:return 24;case 12:return 144;case 13:return 176;case 14:return 210;}return 0;}
int main(int argc,char**argv){
  int types[]={3,8,6,12,14,13}; const char*names[]={"Q4_1","Q8_0","Q5_0","Q4_K","Q6_K","Q5_K"};
  int shapes[][2]={{576,576},{1536,576},{576,1536},{49152,576},{16384,1536}};
  int reps = argc>1?atoi(argv[1]):200;
  printf("%-6s %-11s %-7s | %-24s | %-24s | maxrel\n","type","shape","MB","avx2 old/new GB/s","avx512 old/new GB/s");
  for(int ti=0;ti<6;ti++) for(int si=0;si<5;si++){
    int t=types[ti], O=shapes[si][0], n=shapes[si][1];
    if(n%bsz(t)) continue;
    size_t rb=(size_t)n/bsz(t)*bby(t), bytes=rb*O;
    uint8_t*w=aligned_alloc(64,(bytes+63)/64*64); for(size_t i=0;i<bytes;i++) w[i]=rnd();
    size_t nb=bytes/bby(t);
    for(size_t b=0;b<nb;b++){uint8_t*p=w+b*bby(t);
      if(t==14){p[208]=0;p[209]=0x20;} else {p[0]=0;p[1]=0x20; if(t==3||t==7||t==12||t==13){p[2]=0;p[3]=0x20;}}}
    float*x=malloc(4*n),*y0=malloc(4*O),*y1=malloc(4*O);
    for(int i=0;i<n;i++) x[i]=((int)(rnd()%2001)-1000)/500.0f;
    int8_t*xq=aligned_alloc(64,n+64); float*xd=malloc(4*n/32+64); int16_t*xs=malloc(4*n/16+64);
    int r = bytes>10000000? reps/20+1 : reps;
    double g[2][2]; double maxrel=0;
    for(int isa=1;isa<=2;isa++){
      double bo=1e9,bn=1e9;
      for(int k=0;k<5;k++){
        double t0=now(); for(int i=0;i<r;i++){old_pk_quantize_act(x,n,xq,xd,xs);old_pk_matvec_rows(isa,t,w,rb,0,O,n,xq,xd,xs,y0);} double t1=now();
        for(int i=0;i<r;i++){pk_quantize_act(x,n,xq,xd,xs);pk_matvec_rows(isa,t,w,rb,0,O,n,xq,xd,xs,y1);} double t2=now();
        if(t1-t0<bo)bo=t1-t0; if(t2-t1<bn)bn=t2-t1;
      }
      g[isa-1][0]=bytes*(double)r/bo/1e9; g[isa-1][1]=bytes*(double)r/bn/1e9;
      for(int o=0;o<O;o++){double d=fabs(y0[o]-y1[o])/(fabs(y0[o])+1e-3); if(d>maxrel){maxrel=d;}}
    }
    printf("%-6s %5dx%-5d %-7.2f | %7.1f / %7.1f  (%.2fx) | %7.1f / %7.1f  (%.2fx) | %.1e\n",names[ti],O,n,bytes/1e6,
      g[0][0],g[0][1],g[0][1]/g[0][0],g[1][0],g[1][1],g[1][1]/g[1][0],maxrel);
    free(w);free(x);free(y0);free(y1);free(xq);free(xd);free(xs);
  }
}
